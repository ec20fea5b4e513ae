//! A provider's model list is network input: the gateway fetches it for the globs in
//! `GET /v1/models` (`cliproxy_gateway::parse_model_list`). Whatever the bytes, reading a page
//! never panics, gives the same answer twice, keeps only names that are safe to list (not
//! empty, at most `MAX_MODEL_NAME_LEN` bytes, no control character, space or `*`, which would
//! read as a pattern), never more names than the page has entries, and follows a cursor only
//! for the providers whose lists page (Anthropic, Gemini), at most
//! `MAX_MODEL_LIST_CURSOR_LEN` bytes long.
//!
//! Input layout (the seeds in `fuzz/seeds/model_list/` follow it):
//! - byte 0: the provider type (`% 4`: OpenAI, Claude, Gemini, mock);
//! - the rest: the body.
#![no_main]

use cliproxy_gateway::{
    MAX_MODEL_LIST_CURSOR_LEN, MAX_MODEL_NAME_LEN, ProviderKind, parse_model_list,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [kind, body @ ..] = data else { return };
    let kind = match kind % 4 {
        0 => ProviderKind::Openai,
        1 => ProviderKind::Claude,
        2 => ProviderKind::Gemini,
        _ => ProviderKind::Mock,
    };
    let page = parse_model_list(kind, body);
    assert_eq!(page, parse_model_list(kind, body), "the same bytes read twice differ");
    let Ok(page) = page else { return };
    let entries = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v[if kind == ProviderKind::Gemini { "models" } else { "data" }].as_array().map(Vec::len)
        })
        .expect("a page was read from bytes that hold no list");
    assert!(page.names.len() <= entries, "{} names from {entries} entries", page.names.len());
    for name in &page.names {
        assert!(!name.is_empty() && name.len() <= MAX_MODEL_NAME_LEN, "{name:?}");
        assert!(
            !name.chars().any(|c| c.is_control() || c.is_whitespace() || c == '*'),
            "an unsafe name {name:?}"
        );
    }
    if let Some(next) = &page.next {
        assert!(matches!(kind, ProviderKind::Claude | ProviderKind::Gemini), "{kind:?} paged");
        assert!(!next.is_empty() && next.len() <= MAX_MODEL_LIST_CURSOR_LEN, "{next:?}");
    }
});
