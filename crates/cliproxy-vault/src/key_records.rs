//! Client keys created at run time: the key's format, its digest and the record kept for it.
//!
//! A new key is `cpk-` followed by 48 lowercase hex digits (192 bits from the operating
//! system's random number generator). It is handed to the caller once, in a [`Secret`], and
//! never kept: the [`ClientKeyRecord`] holds its SHA-256 digest, a short display hint and the
//! key's limits. The record is stored by whoever keeps state (the network guard's state store,
//! which sees it as versioned JSON text it does not read), so this module only turns it into
//! that text and back, checking what it reads.

use std::fmt;

use cliproxy_core::{Budget, Quota, RateLimit, Secret, glob_match};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::client_keys::sha256;
use crate::{Error, Result};

/// What every client key created at run time starts with, so that a leaked one is recognised
/// by secret scanners and told apart from a provider's key.
pub const CLIENT_KEY_PREFIX: &str = "cpk-";
/// The length of a created key in characters: the prefix and 48 hex digits.
pub const CLIENT_KEY_LEN: usize = CLIENT_KEY_PREFIX.len() + 2 * KEY_RANDOM_BYTES;
/// How many characters of the key after the prefix a record keeps to show which key it is:
/// 32 bits, enough to tell keys apart on a list, far too few to guess the other 160.
pub const HINT_LEN: usize = 8;
/// The format version of [`ClientKeyRecord::to_stored_json`]; a record of another version is
/// refused rather than half read.
pub const RECORD_VERSION: u32 = 1;

/// Random bytes in a key: 192 bits.
const KEY_RANDOM_BYTES: usize = 24;
/// Random bytes in a record id: ids are not secret, only unique.
const ID_RANDOM_BYTES: usize = 8;
/// What a record id starts with (`ck-` and 16 hex digits).
const ID_PREFIX: &str = "ck-";
/// The longest name accepted, in bytes (names appear in logs, metrics and audit lines).
const MAX_NAME_LEN: usize = 128;
/// The most model patterns one key may list.
const MAX_MODELS: usize = 256;
/// The longest model pattern accepted, in bytes.
const MAX_MODEL_PATTERN_LEN: usize = 256;

/// What a caller asks for when creating a key: everything in a [`ClientKeyRecord`] but what
/// the vault makes itself (the key, its digest and hint, the id and the creation time).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientKeySpec {
    /// The name shown in logs, metrics and audit lines instead of the key.
    pub name: String,
    /// Model name patterns (`*` globs) the key may use; empty means every model.
    pub models: Vec<String>,
    /// Requests and tokens per minute.
    pub rate_limit: Option<RateLimit>,
    /// Tokens per day, week or month.
    pub quota: Option<Quota>,
    /// Dollars per day, week or month.
    pub budget: Option<Budget>,
    /// Unix seconds after which the key is refused; `None` for never.
    pub expires_at: Option<u64>,
    /// Whether the key is refused for now (it can be enabled again, unlike a deleted key).
    pub disabled: bool,
}

impl ClientKeySpec {
    /// A key named `name` with no limits, for every model, never expiring.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            models: Vec::new(),
            rate_limit: None,
            quota: None,
            budget: None,
            expires_at: None,
            disabled: false,
        }
    }
}

/// A client key created at run time, as it is kept: never the key, only its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ClientKeyRecord {
    /// A random id (`ck-` and 16 hex digits), not derived from the key, so that routes and
    /// audit lines can name the key without revealing anything about it.
    pub id: String,
    /// The name shown in logs, metrics and audit lines.
    pub name: String,
    /// The SHA-256 digest of the key, 64 lowercase hex digits.
    pub digest: String,
    /// The first [`HINT_LEN`] characters after `cpk-`, to recognise the key on a list.
    pub hint: String,
    /// Model name patterns (`*` globs) the key may use; empty means every model.
    pub models: Vec<String>,
    /// Requests and tokens per minute.
    pub rate_limit: Option<RateLimit>,
    /// Tokens per day, week or month.
    pub quota: Option<Quota>,
    /// Dollars per day, week or month.
    pub budget: Option<Budget>,
    /// Unix seconds after which the key is refused; `None` for never.
    pub expires_at: Option<u64>,
    /// Whether the key is refused for now.
    pub disabled: bool,
    /// Unix seconds when the key was created.
    pub created_at: u64,
}

/// A key just created: the key itself, which the caller shows once and drops, and the record
/// to store. `Debug` shows the record and `[redacted]` for the key.
#[derive(Debug)]
#[non_exhaustive]
pub struct NewClientKey {
    /// The key, `cpk-` and 48 hex digits. Nothing keeps it after this value is dropped.
    pub key: Secret,
    /// What is stored for it.
    pub record: ClientKeyRecord,
}

/// The stored form: the record behind its format version.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored<R> {
    version: u32,
    key: R,
}

/// Only the version, read first so that a newer record is refused for its version and not
/// for a field this build does not know.
#[derive(Deserialize)]
struct VersionOnly {
    version: u32,
}

impl ClientKeyRecord {
    /// Creates a key with the settings of `spec` at `now` (Unix seconds): checks the settings,
    /// draws the key and the id from the operating system's random number generator and
    /// returns the key with its record.
    pub fn create(spec: ClientKeySpec, now: u64) -> Result<NewClientKey> {
        let problem = |problem| Error::KeyRecord { problem };
        if let Some(expires_at) = spec.expires_at
            && expires_at <= now
        {
            return Err(problem(KeyRecordProblem::ExpiryNotInFuture { expires_at, now }));
        }
        let key = generate_key()?;
        let hint = key
            .expose()
            .get(CLIENT_KEY_PREFIX.len()..CLIENT_KEY_PREFIX.len() + HINT_LEN)
            .unwrap_or_default()
            .to_owned();
        let record = Self {
            id: format!("{ID_PREFIX}{}", random_hex::<ID_RANDOM_BYTES>()?.as_str()),
            name: spec.name,
            digest: key_digest(key.expose().as_bytes()),
            hint,
            models: spec.models,
            rate_limit: spec.rate_limit,
            quota: spec.quota,
            budget: spec.budget,
            expires_at: spec.expires_at,
            disabled: spec.disabled,
            created_at: now,
        };
        record.validate()?;
        Ok(NewClientKey { key, record })
    }

    /// Checks every field: the name and model rules a caller must keep after changing a
    /// record (a management `PATCH`), and the forms of the id, digest and hint that only a
    /// damaged or hand-edited stored record gets wrong.
    pub fn validate(&self) -> Result<()> {
        let fail = |problem| Err(Error::KeyRecord { problem });
        if !is_hex(self.id.strip_prefix(ID_PREFIX).unwrap_or_default(), 2 * ID_RANDOM_BYTES) {
            return fail(KeyRecordProblem::InvalidId);
        }
        if let Some(reason) = name_problem(&self.name) {
            // The key itself pasted as a name would be printed everywhere names go, so such a
            // name is refused without being repeated.
            let name = if self.name.contains(CLIENT_KEY_PREFIX) {
                None
            } else {
                Some(self.name.chars().take(MAX_NAME_LEN).collect())
            };
            return fail(KeyRecordProblem::InvalidName { name, reason });
        }
        if !is_hex(&self.digest, 64) {
            return fail(KeyRecordProblem::InvalidDigest);
        }
        if !is_hex(&self.hint, HINT_LEN) {
            return fail(KeyRecordProblem::InvalidHint);
        }
        if self.models.len() > MAX_MODELS {
            return fail(KeyRecordProblem::TooManyModels {
                count: self.models.len(),
                max: MAX_MODELS,
            });
        }
        for (index, pattern) in self.models.iter().enumerate() {
            if pattern.trim().is_empty() {
                return fail(KeyRecordProblem::EmptyModelPattern { index });
            }
            if pattern.len() > MAX_MODEL_PATTERN_LEN {
                return fail(KeyRecordProblem::ModelPatternTooLong {
                    index,
                    len: pattern.len(),
                    max: MAX_MODEL_PATTERN_LEN,
                });
            }
            if pattern.chars().any(char::is_control) {
                return fail(KeyRecordProblem::ModelPatternControl { index });
            }
        }
        Ok(())
    }

    /// Whether `presented` is this record's key: its digest compared in constant time.
    pub fn matches_key(&self, presented: &[u8]) -> bool {
        digests_match(&key_digest(presented), &self.digest)
    }

    /// Whether the key may be used at `now` (Unix seconds): not disabled, not expired.
    pub fn is_usable(&self, now: u64) -> bool {
        !self.disabled && self.expires_at.is_none_or(|at| now < at)
    }

    /// Whether this key may call `model`.
    pub fn allows_model(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|pattern| glob_match(pattern, model))
    }

    /// The record as the versioned JSON text a state store keeps (`{"version":1,"key":…}`).
    pub fn to_stored_json(&self) -> Result<String> {
        serde_json::to_string(&Stored { version: RECORD_VERSION, key: self })
            .map_err(|_| Error::KeyRecord { problem: KeyRecordProblem::Encode })
    }

    /// Reads a record a state store kept under `id` with the digest column `digest`: the
    /// version must be one this build writes, the fields valid, and the id and digest the
    /// ones the store filed it under (a record copied onto another row is refused).
    pub fn from_stored(id: &str, digest: &str, record_json: &str) -> Result<Self> {
        let fail = |problem| Error::KeyRecord { problem };
        let malformed = |e: serde_json::Error| {
            fail(KeyRecordProblem::Malformed {
                category: match e.classify() {
                    serde_json::error::Category::Io => "read error",
                    serde_json::error::Category::Syntax => "syntax error",
                    serde_json::error::Category::Data => "wrong type or unknown field",
                    serde_json::error::Category::Eof => "unexpected end",
                },
                line: e.line(),
                column: e.column(),
            })
        };
        let VersionOnly { version } = serde_json::from_str(record_json).map_err(malformed)?;
        if version != RECORD_VERSION {
            return Err(fail(KeyRecordProblem::UnsupportedVersion { version }));
        }
        let stored: Stored<Self> = serde_json::from_str(record_json).map_err(malformed)?;
        let record = stored.key;
        record.validate()?;
        if record.id != id || !digests_match(&record.digest, digest) {
            return Err(fail(KeyRecordProblem::FiledElsewhere));
        }
        Ok(record)
    }
}

/// A new client key: `cpk-` and 48 lowercase hex digits from the operating system's random
/// number generator.
pub fn generate_key() -> Result<Secret> {
    let hex = random_hex::<KEY_RANDOM_BYTES>()?;
    // Built at its final size so that no reallocation leaves a copy of the key behind.
    let mut key = String::with_capacity(CLIENT_KEY_LEN);
    key.push_str(CLIENT_KEY_PREFIX);
    key.push_str(&hex);
    Ok(Secret::from(key))
}

/// The SHA-256 digest of a key, as 64 lowercase hex digits (what records and stores keep).
pub fn key_digest(key: &[u8]) -> String {
    hex(&sha256(key))
}

/// The SHA-256 digest of a key as its 32 bytes: what a lookup keyed by digest hashes a
/// presented key into, once, for both the configured keys and the ones created at run time.
pub fn key_sha256(key: &[u8]) -> [u8; 32] {
    sha256(key)
}

/// The 32 bytes of a digest written as 64 lowercase hex digits (a record's `digest`);
/// `None` for anything else.
pub fn digest_bytes(digest: &str) -> Option<[u8; 32]> {
    if !is_hex(digest, 64) {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(digest.as_bytes().chunks_exact(2)) {
        let nibble = |b: u8| if b.is_ascii_digit() { b - b'0' } else { b - b'a' + 10 };
        *byte = (nibble(pair[0]) << 4) | nibble(pair[1]);
    }
    Some(out)
}

/// Whether two digests are equal, compared in constant time: how far two digests agree does
/// not show in the timing. Digests of different lengths differ (their length is no secret).
pub fn digests_match(a: &str, b: &str) -> bool {
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// What is wrong with a client key record ([`Error::KeyRecord`]). Never holds the key; a name
/// that looks like a key is not held either.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyRecordProblem {
    /// The name breaks the naming rules; `None` when it is not repeated because it starts
    /// with `cpk-` and may be the key itself.
    InvalidName {
        /// The name as given (at most 128 characters of it).
        name: Option<String>,
        /// What is allowed.
        reason: &'static str,
    },
    /// A model pattern is empty or blank.
    EmptyModelPattern {
        /// Its position in the list, from 0.
        index: usize,
    },
    /// A model pattern is longer than accepted.
    ModelPatternTooLong {
        /// Its position in the list, from 0.
        index: usize,
        /// Its length in bytes.
        len: usize,
        /// The longest accepted, in bytes.
        max: usize,
    },
    /// A model pattern contains a control character (a newline would forge log lines).
    ModelPatternControl {
        /// Its position in the list, from 0.
        index: usize,
    },
    /// More model patterns than accepted.
    TooManyModels {
        /// How many were given.
        count: usize,
        /// The most accepted.
        max: usize,
    },
    /// The expiry given is not after the creation time.
    ExpiryNotInFuture {
        /// The expiry asked for, Unix seconds.
        expires_at: u64,
        /// The creation time, Unix seconds.
        now: u64,
    },
    /// The id is not `ck-` and 16 lowercase hex digits.
    InvalidId,
    /// The digest is not 64 lowercase hex digits.
    InvalidDigest,
    /// The hint is not 8 lowercase hex digits.
    InvalidHint,
    /// A stored record is not valid JSON or does not match the record's fields. Only the
    /// position and the kind of problem are reported.
    Malformed {
        /// `syntax error`, `unexpected end`, `wrong type or unknown field`.
        category: &'static str,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
    },
    /// A stored record of a format version this build does not read.
    UnsupportedVersion {
        /// The version found.
        version: u32,
    },
    /// A stored record's id or digest is not the one of the row it was found in.
    FiledElsewhere,
    /// The record could not be turned into JSON.
    Encode,
}

impl fmt::Display for KeyRecordProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidName { name: Some(name), reason } => {
                write!(f, "the name `{name}` {reason}")
            }
            Self::InvalidName { name: None, reason } => {
                write!(f, "the name (not repeated: it may be a key) {reason}")
            }
            Self::EmptyModelPattern { index } => write!(f, "model pattern {index} is empty"),
            Self::ModelPatternTooLong { index, len, max } => {
                write!(f, "model pattern {index} is {len} bytes; at most {max} are accepted")
            }
            Self::ModelPatternControl { index } => {
                write!(f, "model pattern {index} contains a control character")
            }
            Self::TooManyModels { count, max } => {
                write!(f, "{count} model patterns given; at most {max} are accepted")
            }
            Self::ExpiryNotInFuture { expires_at, now } => write!(
                f,
                "the expiry {expires_at} (Unix seconds) is not after the creation time {now}"
            ),
            Self::InvalidId => f.write_str("the id is not `ck-` and 16 lowercase hex digits"),
            Self::InvalidDigest => f.write_str("the digest is not 64 lowercase hex digits"),
            Self::InvalidHint => f.write_str("the hint is not 8 lowercase hex digits"),
            Self::Malformed { category, line, column } => {
                write!(f, "not a valid record ({category} at line {line}, column {column})")
            }
            Self::UnsupportedVersion { version } => write!(
                f,
                "record format version {version} is not supported by this build (supported: {RECORD_VERSION}); it was written by a newer cliproxy"
            ),
            Self::FiledElsewhere => {
                f.write_str("the record's id or digest is not the one it is stored under")
            }
            Self::Encode => f.write_str("the record could not be written as JSON"),
        }
    }
}

/// Why a name is refused, if it is: the credential id rules (ASCII letters, digits, `-`, `_`,
/// `.`, 1 to 128 of them, not starting with `.`), since names go into log lines, metric
/// labels and audit lines; and not starting with `cpk-`, so that a key pasted into the name
/// field is not stored and printed everywhere.
fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        Some("must be 1 to 128 characters")
    } else if name.starts_with('.') {
        Some("must not start with `.`")
    } else if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
        Some("may contain only ASCII letters, digits, `-`, `_` and `.`")
    } else if name.contains(CLIENT_KEY_PREFIX) {
        // Anywhere, not only at the start: `Bearer-cpk-…` or `team-cpk-…` would carry a key
        // into every log line, metric and audit line a name goes to.
        Some("must not contain `cpk-` (is it the key itself?)")
    } else {
        None
    }
}

/// Whether `text` is exactly `len` lowercase hex digits.
fn is_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `N` random bytes as lowercase hex; the bytes are wiped after use, the hex is the caller's.
fn random_hex<const N: usize>() -> Result<Zeroizing<String>> {
    let mut bytes = Zeroizing::new([0u8; N]);
    SystemRandom::new().fill(bytes.as_mut()).map_err(|_| Error::Random)?;
    Ok(Zeroizing::new(hex(bytes.as_ref())))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(2 * bytes.len());
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::num::{NonZeroU32, NonZeroU64};

    use cliproxy_core::QuotaPeriod;

    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn spec() -> ClientKeySpec {
        let mut spec = ClientKeySpec::new("ci-runner");
        spec.models = vec!["gpt-4o*".to_owned(), "claude-sonnet-4".to_owned()];
        spec.rate_limit = Some(RateLimit::new(NonZeroU32::new(60), NonZeroU64::new(100_000)));
        spec.quota = Some(Quota::new(NonZeroU64::new(5_000_000).unwrap(), QuotaPeriod::Weekly));
        spec.budget = Some(Budget::new(QuotaPeriod::Daily, NonZeroU64::new(10_000).unwrap()));
        spec.expires_at = Some(NOW + 86_400);
        spec
    }

    fn problem(error: Error) -> KeyRecordProblem {
        match error {
            Error::KeyRecord { problem } => problem,
            other => panic!("not a record problem: {other:?}"),
        }
    }

    #[test]
    fn a_key_is_the_prefix_and_48_lowercase_hex_digits_and_each_is_new() {
        let first = generate_key().unwrap();
        let second = generate_key().unwrap();
        for key in [&first, &second] {
            let key = key.expose();
            assert_eq!(key.len(), 52, "{}", key.len());
            assert_eq!(CLIENT_KEY_LEN, 52);
            let hex = key.strip_prefix("cpk-").unwrap();
            assert_eq!(hex.len(), 48);
            assert!(hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        }
        assert_ne!(first.expose(), second.expose());
    }

    #[test]
    fn the_digest_is_sha256_in_lowercase_hex() {
        // Known answers from an independent implementation (Python's hashlib).
        assert_eq!(
            key_digest(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let key = format!("cpk-{}", "0123456789abcdef".repeat(3));
        assert_eq!(
            key_digest(key.as_bytes()),
            "adbab6c6a35a114962adfff55a7ab506f0e376d02368af5e121e357ef68bc8f1"
        );
    }

    #[test]
    fn a_created_record_holds_the_digest_and_hint_never_the_key() {
        let created = ClientKeyRecord::create(spec(), NOW).unwrap();
        let key = created.key.expose().to_owned();
        let record = &created.record;
        assert_eq!(record.digest, key_digest(key.as_bytes()));
        assert_eq!(record.hint, key[4..12]);
        assert!(record.id.starts_with("ck-") && record.id.len() == 19, "{}", record.id);
        assert_eq!(record.name, "ci-runner");
        assert_eq!(record.created_at, NOW);
        assert!(!record.disabled);
        assert!(record.matches_key(key.as_bytes()));
        assert!(!record.matches_key(&key.as_bytes()[..51]));
        assert!(!record.matches_key(generate_key().unwrap().expose().as_bytes()));
        assert!(record.allows_model("gpt-4o-mini") && !record.allows_model("o3"));
        assert!(record.is_usable(NOW) && !record.is_usable(NOW + 86_400));

        // Neither the record's JSON nor any Debug line holds the key or its secret part.
        let stored = record.to_stored_json().unwrap();
        let printed = format!("{created:?} {record:?} {stored}");
        assert!(printed.contains("[redacted]"), "{printed}");
        assert!(!printed.contains(&key), "{printed}");
        assert!(!printed.contains(&key[12..]), "{printed}");

        let other = ClientKeyRecord::create(spec(), NOW).unwrap();
        assert_ne!(other.record.id, record.id);
        assert_ne!(other.record.digest, record.digest);
    }

    #[test]
    fn a_stored_record_reads_back_equal_and_is_checked() {
        let record = ClientKeyRecord::create(spec(), NOW).unwrap().record;
        let stored = record.to_stored_json().unwrap();
        assert!(stored.starts_with(r#"{"version":1,"key":{"#), "{stored}");
        let back = ClientKeyRecord::from_stored(&record.id, &record.digest, &stored).unwrap();
        assert_eq!(back, record);

        // A record filed under another id or digest, a newer version, torn JSON, an unknown
        // field: each refused with its own problem.
        let other = "f".repeat(64);
        assert_eq!(
            problem(
                ClientKeyRecord::from_stored("ck-0000000000000000", &record.digest, &stored)
                    .unwrap_err()
            ),
            KeyRecordProblem::FiledElsewhere
        );
        assert_eq!(
            problem(ClientKeyRecord::from_stored(&record.id, &other, &stored).unwrap_err()),
            KeyRecordProblem::FiledElsewhere
        );
        let newer = stored.replacen(r#""version":1"#, r#""version":2"#, 1);
        assert_eq!(
            problem(ClientKeyRecord::from_stored(&record.id, &record.digest, &newer).unwrap_err()),
            KeyRecordProblem::UnsupportedVersion { version: 2 }
        );
        let torn = &stored[..stored.len() - 5];
        assert!(matches!(
            problem(ClientKeyRecord::from_stored(&record.id, &record.digest, torn).unwrap_err()),
            KeyRecordProblem::Malformed { category: "unexpected end", line: 1, .. }
        ));
        let unknown = stored.replacen(r#""disabled":"#, r#""disabld":false,"disabled":"#, 1);
        assert!(matches!(
            problem(
                ClientKeyRecord::from_stored(&record.id, &record.digest, &unknown).unwrap_err()
            ),
            KeyRecordProblem::Malformed { category: "wrong type or unknown field", .. }
        ));
        let bad_hint =
            stored.replacen(&format!(r#""hint":"{}""#, record.hint), r#""hint":"XYZ""#, 1);
        assert_eq!(
            problem(
                ClientKeyRecord::from_stored(&record.id, &record.digest, &bad_hint).unwrap_err()
            ),
            KeyRecordProblem::InvalidHint
        );
    }

    /// The messages speak of the record in the library's terms (no setting names of a
    /// program), and a name that may be the key itself is not repeated.
    #[test]
    fn bad_settings_are_typed_errors_that_never_echo_a_key() {
        let key = generate_key().unwrap();
        let with = |edit: &dyn Fn(&mut ClientKeySpec)| {
            let mut spec = spec();
            edit(&mut spec);
            ClientKeyRecord::create(spec, NOW).unwrap_err()
        };
        let cases: Vec<(Error, KeyRecordProblem, &str)> = vec![
            (
                with(&|s| s.name = String::new()),
                KeyRecordProblem::InvalidName {
                    name: Some(String::new()),
                    reason: "must be 1 to 128 characters",
                },
                "client key record: the name `` must be 1 to 128 characters",
            ),
            (
                with(&|s| s.name = "ci runner\n".to_owned()),
                KeyRecordProblem::InvalidName {
                    name: Some("ci runner\n".to_owned()),
                    reason: "may contain only ASCII letters, digits, `-`, `_` and `.`",
                },
                "may contain only ASCII letters",
            ),
            (
                with(&|s| s.name = ".hidden".to_owned()),
                KeyRecordProblem::InvalidName {
                    name: Some(".hidden".to_owned()),
                    reason: "must not start with `.`",
                },
                "must not start with `.`",
            ),
            (
                with(&|s| s.name = key.expose().to_owned()),
                KeyRecordProblem::InvalidName {
                    name: None,
                    reason: "must not contain `cpk-` (is it the key itself?)",
                },
                "the name (not repeated: it may be a key) must not contain `cpk-`",
            ),
            (
                // A key inside a name that breaks another rule first: still not repeated.
                with(&|s| s.name = format!("Bearer {}", key.expose())),
                KeyRecordProblem::InvalidName {
                    name: None,
                    reason: "may contain only ASCII letters, digits, `-`, `_` and `.`",
                },
                "the name (not repeated: it may be a key) may contain only ASCII letters",
            ),
            (
                with(&|s| s.name = format!("team-{}", key.expose())),
                KeyRecordProblem::InvalidName {
                    name: None,
                    reason: "must not contain `cpk-` (is it the key itself?)",
                },
                "the name (not repeated: it may be a key) must not contain `cpk-`",
            ),
            (
                with(&|s| s.models.push(" ".to_owned())),
                KeyRecordProblem::EmptyModelPattern { index: 2 },
                "model pattern 2 is empty",
            ),
            (
                with(&|s| s.models = vec!["a".repeat(257)]),
                KeyRecordProblem::ModelPatternTooLong { index: 0, len: 257, max: 256 },
                "model pattern 0 is 257 bytes; at most 256 are accepted",
            ),
            (
                with(&|s| s.models = vec!["gpt\n".to_owned()]),
                KeyRecordProblem::ModelPatternControl { index: 0 },
                "model pattern 0 contains a control character",
            ),
            (
                with(&|s| s.models = vec!["m".to_owned(); 257]),
                KeyRecordProblem::TooManyModels { count: 257, max: 256 },
                "257 model patterns given",
            ),
            (
                with(&|s| s.expires_at = Some(NOW)),
                KeyRecordProblem::ExpiryNotInFuture { expires_at: NOW, now: NOW },
                "is not after the creation time",
            ),
        ];
        for (error, expected, text) in cases {
            let message = error.to_string();
            assert!(message.contains(text), "{message}");
            assert!(!message.contains(key.expose()), "{message}");
            assert!(!message.contains("auth.") && !message.contains("cliproxy-server"));
            assert!(!error.is_config(), "{message}");
            assert_eq!(problem(error), expected);
        }

        // A record changed after creation (a management change) is checked the same way.
        let mut record = ClientKeyRecord::create(spec(), NOW).unwrap().record;
        record.validate().unwrap();
        record.models.push(String::new());
        assert_eq!(
            problem(record.validate().unwrap_err()),
            KeyRecordProblem::EmptyModelPattern { index: 2 }
        );
        record.models.pop();
        record.id = "ck-XYZ".to_owned();
        assert_eq!(problem(record.validate().unwrap_err()), KeyRecordProblem::InvalidId);
    }

    #[test]
    fn the_raw_digest_is_the_hex_digest_read_back() {
        let key = b"cpk-0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(digest_bytes(&key_digest(key)), Some(key_sha256(key)));
        assert_eq!(hex(&key_sha256(key)), key_digest(key));
        assert_eq!(digest_bytes(&"A".repeat(64)), None);
        assert_eq!(digest_bytes(&"a".repeat(63)), None);
    }

    #[test]
    fn digests_compare_equal_only_when_equal() {
        let a = key_digest(b"cpk-one");
        let b = key_digest(b"cpk-two");
        assert!(digests_match(&a, &a.clone()));
        assert!(!digests_match(&a, &b));
        // A digest differing only in its last digit, and one cut short, differ too.
        let mut last = a.clone();
        last.replace_range(63.., if a.ends_with('0') { "1" } else { "0" });
        assert!(!digests_match(&a, &last));
        assert!(!digests_match(&a, &a[..63]));
        assert!(!digests_match(&a, ""));
    }

    #[test]
    fn budgets_serialize_as_period_and_micro_dollars() {
        let budget = Budget::new(QuotaPeriod::Monthly, NonZeroU64::new(2_500_000).unwrap());
        let text = serde_json::to_string(&budget).unwrap();
        assert_eq!(text, r#"{"period":"monthly","micro_usd":2500000}"#);
        assert_eq!(serde_json::from_str::<Budget>(&text).unwrap(), budget);
        assert!(serde_json::from_str::<Budget>(r#"{"period":"daily","micro_usd":0}"#).is_err());
    }
}
