//! `SHA256SUMS` in the format `sha256sum` writes and `sha256sum -c` reads.

use std::collections::HashSet;
use std::fmt;
use std::io::Read as _;
use std::path::Path;

use super::{Error, Result, SIGNATURE_FILE, SUMS_FILE};

/// Longest artefact name accepted (a common file system limit).
const MAX_NAME: usize = 255;

/// A SHA-256 digest, shown in lower-case hex as `sha256sum` shows it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256([u8; 32]);

impl Sha256 {
    /// The digest of `bytes`.
    pub fn of_bytes(bytes: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
        let mut out = [0; 32];
        out.copy_from_slice(digest.as_ref());
        Self(out)
    }

    /// The digest of a file, read in chunks so that artefacts of any size fit in memory.
    pub fn of_file(path: &Path) -> Result<Self> {
        let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let mut context = ring::digest::Context::new(&ring::digest::SHA256);
        let mut buffer = vec![0; 64 * 1024];
        loop {
            let n = match file.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(path, e)),
            };
            context.update(&buffer[..n]);
        }
        let mut out = [0; 32];
        out.copy_from_slice(context.finish().as_ref());
        Ok(Self(out))
    }

    /// Reads 64 lower-case hex digits (`sha256sum` never writes upper case).
    pub fn from_hex(hex: &str) -> Option<Self> {
        let bytes = hex.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let mut out = [0; 32];
        for (byte, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
            *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        Some(Self(out))
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256({self})")
    }
}

/// The artefacts of a release and their SHA-256 digests: the content of `SHA256SUMS`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checksums {
    entries: Vec<(String, Sha256)>,
}

impl Checksums {
    /// The list for these artefacts, sorted by name as `SHA256SUMS` is written. Names must be
    /// plain file names (see [`check_name`]) and appear once.
    pub fn new(entries: impl IntoIterator<Item = (String, Sha256)>) -> Result<Self> {
        let mut entries: Vec<(String, Sha256)> = entries.into_iter().collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut seen = HashSet::new();
        for (index, (name, _)) in entries.iter().enumerate() {
            check_name(name).map_err(|reason| Error::MalformedChecksums {
                line: index + 1,
                reason: format!("{name:?}: {reason}"),
            })?;
            if !seen.insert(name.as_str()) {
                return Err(Error::MalformedChecksums {
                    line: index + 1,
                    reason: format!("{name:?} is listed twice"),
                });
            }
        }
        Ok(Self { entries })
    }

    /// Reads a `SHA256SUMS` file: `<64 lower-case hex>  <name>` lines, each ending in a
    /// newline, names as [`check_name`] allows and each listed once. `sha256sum`'s binary
    /// marker (`*`) and escaped names are refused: [`Checksums::to_text`] never writes them.
    /// The file order is kept, so that "the first mismatch" is the first in the file.
    pub fn parse(text: &str) -> Result<Self> {
        let malformed = |line: usize, reason: String| Error::MalformedChecksums { line, reason };
        let Some(body) = text.strip_suffix('\n') else {
            return Err(malformed(
                text.lines().count().max(1),
                "the file does not end with a newline".to_owned(),
            ));
        };
        let mut entries = Vec::new();
        let mut seen = HashSet::new();
        for (index, line) in body.split('\n').enumerate() {
            let number = index + 1;
            let (hex, name) = line.split_at_checked(64).ok_or_else(|| {
                malformed(number, "expected `<64 hex digits>  <file name>`".to_owned())
            })?;
            let digest = Sha256::from_hex(hex).ok_or_else(|| {
                malformed(number, "the digest is not 64 lower-case hex digits".to_owned())
            })?;
            let Some(name) = name.strip_prefix("  ") else {
                return Err(malformed(
                    number,
                    "the digest is not followed by two spaces and a file name".to_owned(),
                ));
            };
            check_name(name).map_err(|reason| malformed(number, format!("{name:?}: {reason}")))?;
            if !seen.insert(name) {
                return Err(malformed(number, format!("{name:?} is listed twice")));
            }
            entries.push((name.to_owned(), digest));
        }
        Ok(Self { entries })
    }

    /// The `SHA256SUMS` text, byte for byte what `sha256sum` prints for these files.
    pub fn to_text(&self) -> String {
        self.entries.iter().map(|(name, digest)| format!("{digest}  {name}\n")).collect()
    }

    /// The artefacts and their digests, in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Sha256)> {
        self.entries.iter().map(|(name, digest)| (name.as_str(), digest))
    }

    /// How many artefacts are listed.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no artefact is listed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `name` is listed.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.iter().any(|(listed, _)| listed == name)
    }
}

/// An artefact name is a plain file name: 1 to 255 bytes of `[A-Za-z0-9._+-]`, not starting
/// with a dot or a dash, and not one of the two files a signature writes. This keeps every
/// name inside the release directory, free of `sha256sum`'s escaping, and safe in a shell.
pub(super) fn check_name(name: &str) -> std::result::Result<(), &'static str> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err("a file name must have 1 to 255 bytes");
    }
    if name.starts_with('.') || name.starts_with('-') {
        return Err("a file name must not start with a dot or a dash");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-')) {
        return Err("a file name may only hold letters, digits, '.', '_', '+' and '-'");
    }
    if name == SUMS_FILE || name == SIGNATURE_FILE {
        return Err("the checksum and signature files are not artefacts");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn digest_hex_round_trip() {
        let digest = Sha256::of_bytes(b"");
        assert_eq!(digest.to_string(), EMPTY);
        assert_eq!(Sha256::from_hex(EMPTY), Some(digest));
        assert_eq!(Sha256::from_hex(&EMPTY.to_uppercase()), None);
        assert_eq!(Sha256::from_hex(&EMPTY[1..]), None);
        assert_eq!(Sha256::from_hex(&format!("{}g", &EMPTY[1..])), None);
    }

    #[test]
    fn written_sorted_and_read_back() {
        let sums = Checksums::new([
            ("b-1.0".to_owned(), Sha256::of_bytes(b"b")),
            ("a+x_y.tar.gz".to_owned(), Sha256::of_bytes(b"")),
        ])
        .unwrap();
        let text = sums.to_text();
        assert!(text.starts_with(&format!("{EMPTY}  a+x_y.tar.gz\n")), "{text}");
        let parsed = Checksums::parse(&text).unwrap();
        assert_eq!(parsed, sums);
        assert_eq!(parsed.len(), 2);
        assert!(parsed.contains("b-1.0") && !parsed.contains("c"));
    }

    #[test]
    fn hostile_checksum_files_are_refused_with_the_line() {
        let line = |name: &str| format!("{EMPTY}  {name}\n");
        let cases: Vec<(String, &str)> = vec![
            (String::new(), "line 1: the file does not end with a newline"),
            ("\n".to_owned(), "line 1: expected"),
            (line("a").trim_end().to_owned(), "does not end with a newline"),
            (format!("{}{}", line("a"), line("a")), "line 2: \"a\" is listed twice"),
            (format!("{}  a\n", EMPTY.to_uppercase()), "lower-case hex"),
            (format!("{EMPTY} a\n"), "two spaces"),
            (format!("{EMPTY} *a\n"), "two spaces"),
            (format!("{EMPTY}  *a\n"), "may only hold"),
            (line("../etc/passwd"), "must not start with a dot"),
            (line("dir/file"), "may only hold"),
            (line("/abs"), "may only hold"),
            (line(".hidden"), "must not start with a dot"),
            (line("-rf"), "must not start with"),
            (line("a b"), "may only hold"),
            (line("naïve"), "may only hold"),
            (line(""), "1 to 255 bytes"),
            (line(&"a".repeat(256)), "1 to 255 bytes"),
            (line(SUMS_FILE), "not artefacts"),
            (line(SIGNATURE_FILE), "not artefacts"),
            (format!("{}\\{EMPTY}  a\n", line("b")), "line 2:"),
            (format!("{}x\n", line("b")), "line 2: expected"),
            (format!("{EMPTY}  a\r\n"), "may only hold"),
        ];
        for (text, expected) in cases {
            let err = Checksums::parse(&text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
        assert!(Checksums::new([("a/b".to_owned(), Sha256::of_bytes(b""))]).is_err());
        assert!(
            Checksums::new([
                ("a".to_owned(), Sha256::of_bytes(b"")),
                ("a".to_owned(), Sha256::of_bytes(b"x")),
            ])
            .is_err()
        );
    }
}
