//! An upstream error body is network input that decides whether a credential rests
//! (`cliproxy_gateway::classify_error`): whatever the bytes, judging them never panics, gives
//! the same answer twice, and only a body that is a provider's JSON error can bench a
//! credential (402 aside, which is the account's whatever it says).
//!
//! Input layout (the seeds in `fuzz/seeds/upstream_error_body/` follow it):
//! - byte 0: the provider type (`% 4`: OpenAI, Claude, Gemini, mock);
//! - byte 1: the status (`% 5`: 400, 401, 402, 403, 429);
//! - the rest: the body.
#![no_main]

use cliproxy_gateway::{MAX_ERROR_BODY, ProviderKind, UpstreamFault, classify_error};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [kind, status, body @ ..] = data else { return };
    let kind = match kind % 4 {
        0 => ProviderKind::Openai,
        1 => ProviderKind::Claude,
        2 => ProviderKind::Gemini,
        _ => ProviderKind::Mock,
    };
    let status = [400, 401, 402, 403, 429][usize::from(status % 5)];
    let fault = classify_error(kind, status, body);
    assert_eq!(fault, classify_error(kind, status, body), "the same bytes judged twice differ");
    match status {
        402 => assert_eq!(fault, UpstreamFault::Credential),
        429 => assert_ne!(fault, UpstreamFault::Client, "a 429 is never the client's"),
        _ => {}
    }
    // Bytes that are not JSON, or longer than the cap, are never the credential's fault.
    let unreadable = body.len() > MAX_ERROR_BODY
        || serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err();
    if unreadable && status != 402 {
        let expected =
            if status == 429 { UpstreamFault::RateLimited } else { UpstreamFault::Client };
        assert_eq!(fault, expected, "an unreadable body judged {fault:?}");
    }
});
