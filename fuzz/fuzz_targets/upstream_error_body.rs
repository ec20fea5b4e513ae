//! An upstream error body is network input that decides whether a credential rests
//! (`cliproxy_gateway::classify_error`): whatever the bytes, judging them never panics, gives
//! the same answer twice, and only a body that is a provider's JSON error can bench a
//! credential (402 aside, which is the account's whatever it says).
//!
//! The same bytes go through `cliproxy_gateway::upstream_message`, which takes the message
//! shown to clients out of them: it never panics, and what it gives is safe to show whatever
//! the bytes were — only from a body that is JSON, at most `MAX_UPSTREAM_MESSAGE` characters,
//! no control, bidirectional or zero-width character, no planted credential, not empty.
//!
//! Input layout (the seeds in `fuzz/seeds/upstream_error_body/` follow it):
//! - byte 0: the provider type (`% 4`: OpenAI, Claude, Gemini, mock);
//! - byte 1: the status (`% 5`: 400, 401, 402, 403, 429);
//! - the rest: the body.
#![no_main]

use cliproxy_gateway::{
    MAX_ERROR_BODY, MAX_UPSTREAM_MESSAGE, ProviderKind, UpstreamFault, classify_error,
    upstream_message,
};
use libfuzzer_sys::fuzz_target;

/// The credential the gateway would have sent; the seeds echo it. It holds no `[` or `]`, so
/// no redaction can make it up again from `[redacted]` and its neighbours, and it does not
/// look like a key (`sk-...`), so that only the redaction of the credential itself takes it
/// out.
const SECRET: &str = "planted-fuzz-credential-0123456789";

/// The characters `upstream_message` must take out besides the controls: bidirectional
/// marks, embeddings, overrides and isolates, zero-width ones and the byte order mark.
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{200b}'..='\u{200f}'
        | '\u{202a}'..='\u{202e}'
        | '\u{2060}'..='\u{2069}'
        | '\u{061c}'
        | '\u{feff}')
}

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

    let said = upstream_message(kind, body, SECRET);
    assert_eq!(said, upstream_message(kind, body, SECRET), "the same bytes read twice differ");
    if let Some(said) = &said {
        assert!(!unreadable, "a message from a body that is not JSON: {said:?}");
        assert!(said.chars().count() <= MAX_UPSTREAM_MESSAGE, "{} characters", said.len());
        assert!(!said.is_empty() && said.trim() == said, "{said:?}");
        assert!(
            !said.chars().any(|c| c.is_control() || invisible(c)),
            "a control or invisible character in {said:?}"
        );
        assert!(!said.contains(SECRET), "the credential in {said:?}");
    }
    if unreadable && status != 402 {
        let expected =
            if status == 429 { UpstreamFault::RateLimited } else { UpstreamFault::Client };
        assert_eq!(fault, expected, "an unreadable body judged {fault:?}");
    }
});
