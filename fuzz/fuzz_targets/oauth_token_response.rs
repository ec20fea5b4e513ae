//! The token endpoint's reply to a refresh is network input: whatever the status and bytes,
//! parsing gives new tokens or an error, never a panic; an error never repeats the reply
//! (it may hold tokens), and accepted tokens are printable ASCII that fits in a header.
#![no_main]

use cliproxy_vault::parse_token_response;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&status, body)) = data.split_first() else { return };
    let status = 100 + u16::from(status) * 2;
    match parse_token_response(status, body, 1_700_000_000) {
        Ok(refreshed) => {
            assert_eq!(status, 200);
            assert!(refreshed.expires_at > 1_700_000_000);
            let token = refreshed.access_token.expose();
            assert!(!token.is_empty() && token.bytes().all(|b| (0x21..0x7f).contains(&b)));
        }
        Err(error) => {
            let message = error.to_string();
            if body.len() >= 24 && body.iter().all(|b| b.is_ascii_alphanumeric()) {
                assert!(!message.contains(std::str::from_utf8(&body[..24]).unwrap_or("")));
            }
        }
    }
});
