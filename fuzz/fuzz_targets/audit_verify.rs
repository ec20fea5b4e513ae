//! `audit verify` reads files an attacker may have edited: whatever bytes a file holds, the
//! verifier gives a verdict (never a panic, never unbounded memory), and a valid chain with any
//! one byte changed never verifies as the whole chain.
#![no_main]

use cliproxy_audit::verify_reader;
use libfuzzer_sys::fuzz_target;
use ring::digest::{SHA256, digest};

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
