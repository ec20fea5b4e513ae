//! Signed checkpoints: audit lines of their own type (`event_type: "audit_checkpoint"`) that
//! carry the chain head before them and an Ed25519 signature over it, so that a cut tail can
//! be found offline with only the public key.
//!
//! A checkpoint line is an ordinary chain line (its own `seq`, `prev_hash` and `hash`). Its
//! `result` is the kind (`start`, `periodic`, `reopen`, `shutdown`) and its `details` are
//! `head_seq` and `head_hash` (the line before it: `seq - 1` and `prev_hash`), `every_lines`
//! and `every_secs` (the interval the writer promised, signed so that it cannot be stretched)
//! and `signature` (128 hex digits). The signed message is
//!
//! ```text
//! cliproxy-audit-checkpoint-v1\n{kind}\n{head_seq}\n{head_hash}\n{timestamp}\n{every_lines}\n{every_secs}\n
//! ```
//!
//! with `timestamp` the line's own `timestamp` text. The signing key never leaves the process
//! that writes the log (the gateway keeps it in its vault); the public key is printed by
//! `cliproxy-server audit pubkey`.

use std::fmt::Write as _;
use std::io::Write as _;

use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde_json::{Map, Value};

use crate::config::CheckpointConfig;

/// A chain head: a line's `seq` and `hash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    /// The line's sequence number.
    pub seq: u64,
    /// The line's hash (64 lowercase hex digits).
    pub hash: String,
}

/// The `event_type` of a checkpoint line.
pub const CHECKPOINT_EVENT: &str = "audit_checkpoint";
/// What the signed message starts with (the format's version).
const DOMAIN: &str = "cliproxy-audit-checkpoint-v1";
/// The length of an Ed25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;

/// Why a checkpoint was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CheckpointKind {
    /// The sink opened the file.
    Start,
    /// `every_lines` lines or `every` time since the last one.
    Periodic,
    /// The file was reopened (after a rotation).
    Reopen,
    /// The gateway stopped cleanly: nothing follows until the next start.
    Shutdown,
}

impl CheckpointKind {
    /// The `result` text.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Periodic => "periodic",
            Self::Reopen => "reopen",
            Self::Shutdown => "shutdown",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "start" => Some(Self::Start),
            "periodic" => Some(Self::Periodic),
            "reopen" => Some(Self::Reopen),
            "shutdown" => Some(Self::Shutdown),
            _ => None,
        }
    }
}

/// The public key of a signing key, as `audit pubkey` prints it: 64 lowercase hex digits.
pub fn public_key_hex(key: &Ed25519KeyPair) -> String {
    hex(key.public_key().as_ref())
}

/// Parses a public key given as 64 hex digits or as standard base64 (44 characters).
pub fn parse_public_key(text: &str) -> Result<[u8; PUBLIC_KEY_LEN], String> {
    use base64::Engine as _;
    let text = text.trim();
    let bytes = if text.len() == 2 * PUBLIC_KEY_LEN {
        unhex(text).ok_or("a 64-character public key must be hex digits")?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|_| "the public key is neither 64 hex digits nor base64")?
    };
    bytes.try_into().map_err(|_| {
        format!("an Ed25519 public key is {PUBLIC_KEY_LEN} bytes (64 hex digits or 44 base64 characters)")
    })
}

/// Writes a checkpoint line's fields from `event_type` to `details`, signing the head.
pub(crate) fn write_fields(
    buf: &mut Vec<u8>,
    signer: &Ed25519KeyPair,
    kind: CheckpointKind,
    head: &ChainHead,
    timestamp: &str,
    every: &CheckpointConfig,
) {
    let every_lines = every.every_lines.get();
    let every_secs = every.every.as_secs();
    let message = message(kind.as_str(), head.seq, &head.hash, timestamp, every_lines, every_secs);
    let signature = hex(signer.sign(message.as_bytes()).as_ref());
    let _ = write!(
        buf,
        ",\"event_type\":\"{CHECKPOINT_EVENT}\",\"provider\":null,\"user_id\":null,\"ip\":null,\
         \"result\":\"{}\",\"request_id\":null,\"details\":{{\"head_seq\":{},\"head_hash\":\"{}\",\
         \"every_lines\":{every_lines},\"every_secs\":{every_secs},\"signature\":\"{signature}\"}}",
        kind.as_str(),
        head.seq,
        head.hash,
    );
}

/// A checkpoint line's fields, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    pub(crate) kind: CheckpointKind,
    pub(crate) timestamp: String,
    pub(crate) head_seq: u64,
    pub(crate) head_hash: String,
    pub(crate) every_lines: u64,
    pub(crate) every_secs: u64,
    signature: Vec<u8>,
}

impl Checkpoint {
    /// Reads the fields of a parsed line whose `event_type` is [`CHECKPOINT_EVENT`]. Every
    /// field is bounded by its type (numbers, 64 or 128 hex digits), whatever the line holds.
    pub(crate) fn parse(map: &Map<String, Value>) -> Result<Self, String> {
        let text = |key: &str| map.get(key).and_then(Value::as_str);
        let kind = text("result")
            .and_then(CheckpointKind::parse)
            .ok_or("`result` is not start, periodic, reopen or shutdown")?;
        let timestamp = text("timestamp").ok_or("`timestamp` missing")?.to_owned();
        let details = map.get("details").and_then(Value::as_object).ok_or("`details` missing")?;
        let number = |key: &str| {
            details
                .get(key)
                .and_then(Value::as_u64)
                .ok_or_else(|| format!("`details.{key}` missing or not a whole number"))
        };
        let hex_field = |key: &str, len: usize| {
            details
                .get(key)
                .and_then(Value::as_str)
                .filter(|s| s.len() == len)
                .and_then(unhex)
                .ok_or_else(|| format!("`details.{key}` missing or not {len} hex digits"))
        };
        let head_hash = hex_field("head_hash", 64)?;
        Ok(Self {
            kind,
            timestamp,
            head_seq: number("head_seq")?,
            head_hash: hex(&head_hash),
            every_lines: number("every_lines")?,
            every_secs: number("every_secs")?,
            signature: hex_field("signature", 128)?,
        })
    }

    /// Whether the signature verifies with `public_key`.
    pub(crate) fn signed_by(&self, public_key: &[u8; PUBLIC_KEY_LEN]) -> bool {
        let message = message(
            self.kind.as_str(),
            self.head_seq,
            &self.head_hash,
            &self.timestamp,
            self.every_lines,
            self.every_secs,
        );
        UnparsedPublicKey::new(&ED25519, public_key)
            .verify(message.as_bytes(), &self.signature)
            .is_ok()
    }
}

fn message(
    kind: &str,
    head_seq: u64,
    head_hash: &str,
    timestamp: &str,
    every_lines: u64,
    every_secs: u64,
) -> String {
    format!("{DOMAIN}\n{kind}\n{head_seq}\n{head_hash}\n{timestamp}\n{every_lines}\n{every_secs}\n")
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes.chunks(2).map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?)).collect()
}

#[cfg(test)]
mod tests {
    use ring::rand::SystemRandom;

    use super::*;

    pub(crate) fn key() -> Ed25519KeyPair {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
    }

    fn written(key: &Ed25519KeyPair, kind: CheckpointKind) -> Map<String, Value> {
        let head = ChainHead { seq: 41, hash: "ab".repeat(32) };
        let mut buf = b"{\"seq\":42,\"timestamp\":\"2026-12-07T12:00:00.000Z\"".to_vec();
        write_fields(&mut buf, key, kind, &head, "2026-12-07T12:00:00.000Z", &Default::default());
        buf.push(b'}');
        serde_json::from_slice(&buf).unwrap()
    }

    #[test]
    fn a_checkpoint_verifies_with_its_key_only() {
        let key = key();
        let map = written(&key, CheckpointKind::Periodic);
        let checkpoint = Checkpoint::parse(&map).unwrap();
        assert_eq!((checkpoint.head_seq, checkpoint.every_lines), (41, 1000));
        let public: [u8; 32] = key.public_key().as_ref().try_into().unwrap();
        assert!(checkpoint.signed_by(&public));
        let other: [u8; 32] = self::key().public_key().as_ref().try_into().unwrap();
        assert!(!checkpoint.signed_by(&other), "another key must not verify it");
    }

    #[test]
    fn a_tampered_checkpoint_does_not_verify() {
        let key = key();
        let public: [u8; 32] = key.public_key().as_ref().try_into().unwrap();
        for (field, value) in [
            ("head_seq", serde_json::json!(40)),
            ("head_hash", serde_json::json!("cd".repeat(32))),
            ("every_lines", serde_json::json!(1_000_000)),
            ("every_secs", serde_json::json!(86_400)),
        ] {
            let mut map = written(&key, CheckpointKind::Periodic);
            map["details"][field] = value;
            let checkpoint = Checkpoint::parse(&map).unwrap();
            assert!(!checkpoint.signed_by(&public), "{field} changed but the signature verifies");
        }
        let mut map = written(&key, CheckpointKind::Periodic);
        map["result"] = serde_json::json!("shutdown");
        assert!(!Checkpoint::parse(&map).unwrap().signed_by(&public), "kind changed");
        let mut map = written(&key, CheckpointKind::Periodic);
        map["timestamp"] = serde_json::json!("2030-01-01T00:00:00.000Z");
        assert!(!Checkpoint::parse(&map).unwrap().signed_by(&public), "time changed");
    }

    #[test]
    fn hostile_checkpoint_fields_are_refused_without_panicking() {
        let key = key();
        for (field, value) in [
            ("signature", serde_json::json!("zz".repeat(64))),
            ("signature", serde_json::json!("ab".repeat(10_000))),
            ("signature", serde_json::json!(7)),
            ("head_hash", serde_json::json!("é".repeat(32))),
            ("head_seq", serde_json::json!(-1)),
            ("every_lines", serde_json::json!(1.5)),
        ] {
            let mut map = written(&key, CheckpointKind::Start);
            map["details"][field] = value.clone();
            let err = Checkpoint::parse(&map).err().unwrap_or_default();
            assert!(err.contains(field), "{field} = {value}: {err}");
        }
        let mut map = written(&key, CheckpointKind::Start);
        map["result"] = serde_json::json!("forever");
        assert!(Checkpoint::parse(&map).is_err());
    }

    #[test]
    fn public_keys_parse_as_hex_or_base64() {
        use base64::Engine as _;
        let key = key();
        let raw: [u8; 32] = key.public_key().as_ref().try_into().unwrap();
        assert_eq!(parse_public_key(&public_key_hex(&key)), Ok(raw));
        let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
        assert_eq!(parse_public_key(&b64), Ok(raw));
        assert!(parse_public_key("abcd").is_err());
        assert!(parse_public_key(&"g".repeat(64)).is_err());
    }
}
