//! The config loader sees files written by people and variables set by orchestrators: any text
//! must load or give an error, never panic.
#![no_main]

use cliproxy_server::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::from_yaml(text);
    }
});
