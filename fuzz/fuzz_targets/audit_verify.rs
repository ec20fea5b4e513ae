//! `audit verify` reads files an attacker may have edited: whatever bytes a file holds, the
//! verifier gives a verdict (never a panic, never unbounded memory), and a valid chain with any
//! one byte changed never verifies as the whole chain. With a public key (`--pubkey`), hostile
//! checkpoint lines (any bytes, oversized or malformed signatures and numbers) get a verdict
//! too, and a signed chain with one byte changed never verifies as the whole chain.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

use cliproxy_audit::{SignedCheck, verify_reader, verify_reader_signed};
use libfuzzer_sys::fuzz_target;
use ring::digest::{SHA256, digest};
use ring::signature::{Ed25519KeyPair, KeyPair};

/// A fixed signing key (from a fixed seed), so that runs are reproducible.
fn key() -> &'static Ed25519KeyPair {
    static KEY: OnceLock<Ed25519KeyPair> = OnceLock::new();
    KEY.get_or_init(|| {
        Ed25519KeyPair::from_seed_unchecked(&[7; 32]).expect("a 32-byte seed is a key")
    })
}

fn signed_check() -> SignedCheck {
    SignedCheck {
        public_key: key().public_key().as_ref().try_into().expect("32 bytes"),
        // A minute after the chain's time: a recent last checkpoint.
        now: UNIX_EPOCH + Duration::from_secs(1_767_225_660),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A signed chain as the sink writes it: start checkpoint, one event, shutdown checkpoint.
fn signed_chain() -> Vec<u8> {
    let stamp = "2026-01-01T00:00:00.000Z";
    let mut prev = "0".repeat(64);
    let mut out = Vec::new();
    for seq in 1..=3u64 {
        let middle = if seq == 2 {
            "\"event_type\":\"auth_success\",\"provider\":null,\"user_id\":\"alice\",\"ip\":null,\
             \"result\":\"success\",\"request_id\":null,\"details\":{}"
                .to_owned()
        } else {
            let kind = if seq == 1 { "start" } else { "shutdown" };
            let message = format!(
                "cliproxy-audit-checkpoint-v1\n{kind}\n{}\n{prev}\n{stamp}\n1000\n300\n",
                seq - 1
            );
            let signature = hex(key().sign(message.as_bytes()).as_ref());
            format!(
                "\"event_type\":\"audit_checkpoint\",\"provider\":null,\"user_id\":null,\"ip\":null,\
                 \"result\":\"{kind}\",\"request_id\":null,\"details\":{{\"head_seq\":{},\
                 \"head_hash\":\"{prev}\",\"every_lines\":1000,\"every_secs\":300,\
                 \"signature\":\"{signature}\"}}",
                seq - 1
            )
        };
        let prefix =
            format!("{{\"seq\":{seq},\"timestamp\":\"{stamp}\",{middle},\"prev_hash\":\"{prev}\"");
        let hash = hex(digest(&SHA256, prefix.as_bytes()).as_ref());
        out.extend_from_slice(format!("{prefix},\"hash\":\"{hash}\"}}\n").as_bytes());
        prev = hash;
    }
    out
}

/// A valid chain of three lines, written the way the sink writes them.
fn chain() -> Vec<u8> {
    let mut prev = "0".repeat(64);
    let mut out = Vec::new();
    for seq in 1..=3 {
        let prefix = format!(
            "{{\"seq\":{seq},\"timestamp\":\"2026-01-01T00:00:00.000Z\",\"event_type\":\"auth_success\",\
             \"provider\":null,\"user_id\":\"alice\",\"ip\":\"10.0.0.1\",\"result\":\"success\",\
             \"request_id\":null,\"details\":{{}},\"prev_hash\":\"{prev}\""
        );
        let hash: String = digest(&SHA256, prefix.as_bytes())
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        out.extend_from_slice(format!("{prefix},\"hash\":\"{hash}\"}}\n").as_bytes());
        prev = hash;
    }
    out
}

fuzz_target!(|data: &[u8]| {
    match data {
        // Mode 1: one byte of a valid chain changed.
        [1, hi, lo, byte, ..] => {
            let mut file = chain();
            let at = usize::from(u16::from_be_bytes([*hi, *lo])) % file.len();
            if file[at] == *byte {
                return;
            }
            file[at] = *byte;
            if let Ok(verified) = verify_reader("audit.log", &file[..]) {
                // Only a changed final newline passes: the last line then reads as torn (a
                // crash), the tail truncation a hash chain cannot tell from a crash.
                assert!(verified.lines < 3 && !verified.notes.is_empty(), "{verified}");
            }
        }
        // Mode 2: any bytes as a file, verified with a public key (hostile checkpoint lines).
        [2, rest @ ..] => match verify_reader_signed("audit.log", rest, signed_check()) {
            Ok(verified) => {
                // Only a file whose checkpoints the key signed can pass.
                assert!(verified.checkpoints.is_some_and(|n| n > 0), "{verified}");
            }
            Err(broken) => assert!(broken.to_string().starts_with("audit.log")),
        },
        // Mode 3: one byte of a valid signed chain changed.
        [3, hi, lo, byte, ..] => {
            let mut file = signed_chain();
            let at = usize::from(u16::from_be_bytes([*hi, *lo])) % file.len();
            if file[at] == *byte {
                return;
            }
            file[at] = *byte;
            if let Ok(verified) = verify_reader_signed("audit.log", &file[..], signed_check()) {
                assert!(verified.lines < 3 && !verified.notes.is_empty(), "{verified}");
            }
        }
        // Mode 0: any bytes as a file.
        _ => match verify_reader("audit.log", data) {
            Ok(verified) => {
                let _ = verified.to_string();
            }
            Err(broken) => {
                assert!(broken.to_string().starts_with("audit.log"));
            }
        },
    }
});
