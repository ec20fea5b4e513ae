//! Credential files are read from disk at every start: whatever bytes a file holds, parsing
//! gives a credential or an error, never a panic; an error never repeats the file's contents.
#![no_main]

use std::path::Path;

use cliproxy_vault::parse_credential_file;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(error) = parse_credential_file(Path::new("/fuzz/x.json"), "x", data) {
        let message = error.to_string();
        assert!(message.contains("/fuzz/x.json"));
        // A run of 24 bytes from the input never shows up in the message (tokens are long).
        if data.len() >= 24 && data.iter().all(|b| b.is_ascii_alphanumeric()) {
            assert!(!message.contains(std::str::from_utf8(&data[..24]).unwrap_or("")));
        }
    }
});
