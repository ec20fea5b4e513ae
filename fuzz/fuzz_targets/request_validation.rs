//! Request validation reads client JSON bodies: whatever the body, it answers a token count or
//! a message, never panics, and a count it accepts is within the cap.
#![no_main]

use std::num::NonZeroU32;

use cliproxy_netguard::{RequestKind, TokenCap, ValidationConfig, Validator};
use libfuzzer_sys::fuzz_target;

const KINDS: [RequestKind; 6] = [
    RequestKind::ChatCompletions,
    RequestKind::Responses,
    RequestKind::Embeddings,
    RequestKind::Messages,
    RequestKind::CountTokens,
    RequestKind::GeminiGenerate,
];

fuzz_target!(|data: &[u8]| {
    let Some((&control, body)) = data.split_first() else { return };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else { return };
    let mut config = ValidationConfig::default();
    config.max_tokens = NonZeroU32::new(u32::from(control) * 16 + 1).unwrap();
    let validator = Validator::new(&config);
    let kind = KINDS[usize::from(control) % KINDS.len()];
    let cap = TokenCap { provider_max_tokens: None, provider: "fuzz" };
    if let Ok(Some(tokens)) = validator.check(kind, &value, cap) {
        assert!(tokens <= u64::from(config.max_tokens.get()));
    }
});
