//! `POST /v0/management/client-keys` and `PATCH /v0/management/client-keys/{name}` read their
//! JSON bodies (any bytes a management caller sends, after the key check) with the same
//! parser `check_client_key_body` runs: whatever the bytes, it must give a record that
//! passes its own validation and survives the state store's round trip, or a refusal of
//! bounded length that never repeats a client key — never a panic.
//!
//! Input layout (the seeds in `fuzz/seeds/client_key_body/` follow it): byte 0 chooses the
//! route (even: `POST`, odd: `PATCH`); the rest is the body.
#![no_main]

use cliproxy_gateway::check_client_key_body;
use cliproxy_vault::ClientKeyRecord;
use libfuzzer_sys::fuzz_target;

/// 2027-01-15T08:00:00Z.
const NOW: u64 = 1_800_000_000;

fuzz_target!(|data: &[u8]| {
    let Some((&route, body)) = data.split_first() else { return };
    match check_client_key_body(body, NOW, route % 2 == 1) {
        Ok(record) => {
            record.validate().unwrap();
            assert!(record.expires_at.is_none_or(|at| at > NOW), "{record:?}");
            let stored = record.to_stored_json().unwrap();
            let back = ClientKeyRecord::from_stored(&record.id, &record.digest, &stored).unwrap();
            assert_eq!(back, record);
        }
        Err(message) => {
            assert!(message.len() < 1024, "{} bytes: {message}", message.len());
            // A key pasted into a field is never repeated: `cpk-` followed by a run of hex.
            if let Some(at) = message.find("cpk-") {
                let after = &message[at + 4..];
                let hex = after.bytes().take_while(u8::is_ascii_hexdigit).count();
                assert!(hex < 16, "a key-like value is repeated: {message}");
            }
        }
    }
});
