//! The upstream's own words, when the gateway answers an error in their place.
//!
//! When an upstream answer makes the gateway fail over or give up (a 429, a 5xx), the client
//! gets the gateway's error, in the format of the API it called, with the gateway's code and
//! status. [`upstream_message`] takes the provider's `message` out of that answer, so that the
//! gateway's message can end with what the upstream said ("Rate limit reached for gpt-4o-mini
//! ... on requests per min") instead of hiding it. Only the message is taken, never the
//! provider's `type`, `code` or `status`: the status the client gets is the gateway's.
//!
//! A message is shown only when it is safe to show (`docs/security/faults.md`):
//!
//! - it comes from a body that parses as the provider's own error JSON (never raw HTML or
//!   text, which may be a proxy's page), at most [`MAX_ERROR_BODY`] bytes long;
//! - the credential the gateway sent is replaced by `[redacted]`, and so are words that look
//!   like a key or a masked key (`sk-...`, `AIza...`, `ya29....`, anything with `***`: OpenAI's
//!   401 quotes the key's first and last characters) and OpenAI organisation ids (`org-...`),
//!   which name the operator's account;
//! - terminal escape sequences, control characters, bidirectional overrides and zero-width
//!   characters are taken out, line breaks and tabs become spaces;
//! - it is cut to [`MAX_UPSTREAM_MESSAGE`] characters.
//!
//! The caller decides when: never for a fault of the gateway's credential (a client told
//! "invalid x-api-key" would think its own key wrong); the operator reads it in the log.

use serde_json::Value;

use crate::config::ProviderKind;
use crate::providers::MAX_ERROR_BODY;

/// The most characters of an upstream message shown to a client: the providers' messages are
/// one or two sentences; anything longer is cut, with `…` as its last character.
pub const MAX_UPSTREAM_MESSAGE: usize = 512;

/// What replaces the credential and the organisation ids in a message.
const REDACTED: &str = "[redacted]";

/// The message of the upstream error `body`, in the error format of a provider of `kind`,
/// made safe to show a client (see the module's documentation), with `secret` (the
/// credential sent) redacted. `None` when the body is not that provider's error JSON, or its
/// message is empty once cleaned.
///
/// The formats read:
/// - OpenAI: `{"error": {"message": "...", "type": ..., "code": ...}}`;
/// - Anthropic: `{"type": "error", "error": {"type": "...", "message": "..."}}`;
/// - Gemini: `{"error": {"code": 429, "message": "...", "status": "..."}}`, also as the first
///   element of an array (its streaming endpoints);
/// - the mock: any of the three.
pub fn upstream_message(kind: ProviderKind, body: &[u8], secret: &str) -> Option<String> {
    if body.len() > MAX_ERROR_BODY {
        return None;
    }
    // Invalid UTF-8 and nesting past serde_json's recursion limit fail here.
    let value: Value = serde_json::from_slice(body).ok()?;
    let message = match kind {
        ProviderKind::Openai => openai(&value),
        ProviderKind::Claude => anthropic(&value),
        ProviderKind::Gemini => gemini(&value),
        ProviderKind::Mock => {
            openai(&value).or_else(|| anthropic(&value)).or_else(|| gemini(&value))
        }
    }?;
    clean(message, secret)
}

/// OpenAI's shape: an `error` object with a string `message`.
fn openai(value: &Value) -> Option<&str> {
    value.get("error")?.as_object()?.get("message")?.as_str()
}

/// Anthropic's shape: `"type": "error"` and an `error` object with a string `type` and a
/// string `message`.
fn anthropic(value: &Value) -> Option<&str> {
    if value.get("type")?.as_str()? != "error" {
        return None;
    }
    let error = value.get("error")?.as_object()?;
    error.get("type")?.as_str()?;
    error.get("message")?.as_str()
}

/// Gemini's shape (Google's API error): an `error` object with a string `message` and a
/// numeric `code` or a string `status`; the streaming endpoints may wrap it in an array.
fn gemini(value: &Value) -> Option<&str> {
    let value = match value {
        Value::Array(items) => items.first()?,
        other => other,
    };
    let error = value.get("error")?.as_object()?;
    let coded = error.get("code").is_some_and(Value::is_u64)
        || error.get("status").is_some_and(Value::is_string);
    if !coded {
        return None;
    }
    error.get("message")?.as_str()
}

/// The message made safe to show: escapes and invisible characters out, the secret and the
/// organisation ids redacted, whitespace runs made one space, cut to
/// [`MAX_UPSTREAM_MESSAGE`] characters. Redaction comes after the characters are taken out
/// (a secret split by an invisible character would otherwise survive it) and before the cut
/// (which could leave a prefix of the secret).
fn clean(message: &str, secret: &str) -> Option<String> {
    let mut visible = String::with_capacity(message.len().min(4 * MAX_UPSTREAM_MESSAGE));
    let mut chars = message.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            // A CSI sequence (`ESC [ params final`): its parameters would show as text.
            '\u{1b}' if chars.peek() == Some(&'[') => {
                chars.next();
                for c in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&c) {
                        break;
                    }
                }
            }
            // Line breaks and tabs too: the message goes on one line.
            c if c.is_whitespace() => push_space(&mut visible),
            c if c.is_control() || invisible(c) => {}
            c => visible.push(c),
        }
    }
    let mut text = visible.trim().to_owned();
    if !secret.is_empty() {
        text = text.replace(secret, REDACTED);
    }
    let text = redact_org_ids(&redact_key_words(&text));
    if text.is_empty() {
        return None;
    }
    Some(cap(text))
}

/// Appends one space, unless the text ends with one already.
fn push_space(text: &mut String) {
    if !text.is_empty() && !text.ends_with(' ') {
        text.push(' ');
    }
}

/// Characters that change how text around them is shown without showing themselves: the
/// bidirectional embeddings, overrides, isolates and marks (a U+202E turns what follows
/// around), zero-width spaces and joiners, and the byte order mark.
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{200b}'..='\u{200f}'
        | '\u{202a}'..='\u{202e}'
        | '\u{2060}'..='\u{2069}'
        | '\u{061c}'
        | '\u{feff}')
}

/// How the keys of the providers (and OAuth access tokens) start: OpenAI's and Anthropic's
/// `sk-`, Google's API keys `AIza` and access tokens `ya29.`.
const KEY_PREFIXES: &[&str] = &["sk-", "AIza", "ya29."];

/// Each space-separated word that starts like a key ([`KEY_PREFIXES`]) or holds `***` (a
/// masked key) becomes `[redacted]`, with the punctuation around it kept: a part of a key
/// is none of the client's business, and does not belong in the log either.
fn redact_key_words(text: &str) -> String {
    let words: Vec<String> = text
        .split(' ')
        .map(|word| {
            let start = word.trim_start_matches(['(', '"', '\'', '<']);
            let core = start.trim_end_matches(['.', ',', ';', ':', ')', '"', '\'', '>']);
            let key_like =
                KEY_PREFIXES.iter().any(|prefix| core.starts_with(prefix)) || core.contains("***");
            if key_like {
                let lead = &word[..word.len() - start.len()];
                format!("{lead}{REDACTED}{}", &start[core.len()..])
            } else {
                word.to_owned()
            }
        })
        .collect();
    words.join(" ")
}

/// `org-` followed by letters and digits (an OpenAI organisation id) becomes `org-[redacted]`:
/// it names the operator's account, which is none of the client's business.
fn redact_org_ids(text: &str) -> String {
    const PREFIX: &str = "org-";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(PREFIX) {
        let after = &rest[at + PREFIX.len()..];
        let id_len = after.find(|c: char| !c.is_ascii_alphanumeric()).unwrap_or(after.len());
        // A word that only ends in `org` (`cyborg-like`) is not an id's start.
        let starts_word = rest[..at].chars().next_back().is_none_or(|c| !c.is_alphanumeric());
        out.push_str(&rest[..at + PREFIX.len()]);
        if id_len > 0 && starts_word {
            out.push_str(REDACTED);
        } else {
            out.push_str(&after[..id_len]);
        }
        rest = &after[id_len..];
    }
    out.push_str(rest);
    out
}

/// `text` cut to [`MAX_UPSTREAM_MESSAGE`] characters (never inside one), ending in `…` when
/// it was cut.
fn cap(text: String) -> String {
    match text.char_indices().nth(MAX_UPSTREAM_MESSAGE) {
        None => text,
        Some(_) => {
            let keep = MAX_UPSTREAM_MESSAGE - 1;
            let end = text.char_indices().nth(keep).map_or(text.len(), |(at, _)| at);
            let mut cut = text[..end].trim_end().to_owned();
            cut.push('…');
            cut
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "sk-planted-secret-0123456789abcdef";

    fn said(kind: ProviderKind, body: &str) -> Option<String> {
        upstream_message(kind, body.as_bytes(), SECRET)
    }

    #[test]
    fn each_provider_format_gives_its_message() {
        let openai = r#"{"error":{"message":"Rate limit reached for gpt-4o-mini on requests per min (RPM): Limit 3, Used 3, Requested 1.","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
        let anthropic = r#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}}"#;
        let gemini = r#"{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED","details":[]}}"#;
        let gemini_array = format!("[{gemini}]");
        assert_eq!(
            said(ProviderKind::Openai, openai).as_deref(),
            Some(
                "Rate limit reached for gpt-4o-mini on requests per min (RPM): Limit 3, Used 3, Requested 1."
            )
        );
        assert_eq!(
            said(ProviderKind::Claude, anthropic).as_deref(),
            Some("Number of request tokens has exceeded your per-minute rate limit")
        );
        for body in [gemini, gemini_array.as_str()] {
            assert_eq!(
                said(ProviderKind::Gemini, body).as_deref(),
                Some("Resource has been exhausted (e.g. check quota)."),
                "{body}"
            );
        }
        // The mock answers in every format.
        for body in [openai, anthropic, gemini] {
            assert!(said(ProviderKind::Mock, body).is_some(), "{body}");
        }
    }

    #[test]
    fn a_body_in_another_shape_gives_nothing() {
        let cases: &[(ProviderKind, &str)] = &[
            // Another provider's shape: Anthropic's needs `"type": "error"` and its own type.
            (ProviderKind::Claude, r#"{"error":{"message":"m","type":"x"}}"#),
            (ProviderKind::Claude, r#"{"type":"error","error":{"message":"m"}}"#),
            // Gemini's needs its code or status.
            (ProviderKind::Gemini, r#"{"error":{"message":"m"}}"#),
            (ProviderKind::Gemini, r#"{"error":{"message":"m","code":"429"}}"#),
            (ProviderKind::Openai, r#"{"error":"Rate limited"}"#),
            (ProviderKind::Openai, r#"{"error":{"message":42}}"#),
            (ProviderKind::Openai, r#"{"message":"m"}"#),
            (ProviderKind::Openai, r#"[{"error":{"message":"m"}}]"#),
            (ProviderKind::Gemini, "[]"),
            (ProviderKind::Openai, r#"{"error":{"message":"  \u200b\n "}}"#),
        ];
        for (kind, body) in cases {
            assert_eq!(said(*kind, body), None, "{kind:?} {body}");
        }
    }

    #[test]
    fn html_text_and_broken_json_give_nothing() {
        for body in [
            "<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>",
            "upstream connect error or disconnect/reset before headers",
            "",
            r#"{"error":{"message":"cut"#,
        ] {
            for kind in [
                ProviderKind::Openai,
                ProviderKind::Claude,
                ProviderKind::Gemini,
                ProviderKind::Mock,
            ] {
                assert_eq!(said(kind, body), None, "{kind:?} {body}");
            }
        }
        // Not UTF-8: serde_json refuses it.
        let mut bytes = br#"{"error":{"message":"bad "#.to_vec();
        bytes.extend_from_slice(&[0xff, 0xfe]);
        bytes.extend_from_slice(br#""}}"#);
        assert_eq!(upstream_message(ProviderKind::Openai, &bytes, SECRET), None);
    }

    #[test]
    fn the_credential_and_organisation_ids_are_redacted() {
        // Written plainly, with JSON escapes, and split by invisible characters.
        let body = format!(
            r#"{{"error":{{"message":"key {SECRET} in organization org-AbC123xyz; again \u0073k-planted-secret-0123456789abcdef and sk-planted-\u200bsecret-0123456789abcdef\u0007; cyborg-9 stays","type":"requests"}}}}"#
        );
        let message = said(ProviderKind::Openai, &body).unwrap();
        assert!(!message.contains("planted"), "{message}");
        assert!(!message.contains("AbC123xyz"), "{message}");
        assert_eq!(
            message,
            "key [redacted] in organization org-[redacted]; again [redacted] and [redacted]; cyborg-9 stays"
        );
    }

    #[test]
    fn words_that_look_like_keys_are_redacted() {
        // OpenAI's own 401, which quotes the key's ends.
        let body = r#"{"error":{"message":"Incorrect API key provided: sk-proj-abcd************************wxyz. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#;
        assert_eq!(
            said(ProviderKind::Openai, body).as_deref(),
            Some(
                "Incorrect API key provided: [redacted]. You can find your API key at https://platform.openai.com/account/api-keys."
            )
        );
        let body = r#"{"error":{"code":400,"message":"key (AIzaSyA-1234567) and token ya29.a0Af, and ****1234; task-sk-1 stays","status":"INVALID_ARGUMENT"}}"#;
        assert_eq!(
            said(ProviderKind::Gemini, body).as_deref(),
            Some("key ([redacted]) and token [redacted], and [redacted]; task-sk-1 stays")
        );
    }

    #[test]
    fn escapes_controls_and_bidi_overrides_are_taken_out() {
        let body = r#"{"error":{"message":"\u001b[31mred\u001b[0m text\u202e desrever\u2066 \u0000nul\u009b\r\nnext\tline \ufeff","type":"x"}}"#;
        let message = said(ProviderKind::Openai, body).unwrap();
        assert_eq!(message, "red text desrever nul next line");
        assert!(message.chars().all(|c| !c.is_control() && !invisible(c)), "{message:?}");
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        // Multi-byte characters, so that a cut by bytes would split one.
        let long = "é".repeat(2000);
        let body = json_error(&long);
        let message = said(ProviderKind::Openai, &body).unwrap();
        assert_eq!(message.chars().count(), MAX_UPSTREAM_MESSAGE);
        assert!(message.ends_with('…'), "{message}");
        let exact = "a".repeat(MAX_UPSTREAM_MESSAGE);
        assert_eq!(said(ProviderKind::Openai, &json_error(&exact)), Some(exact));
    }

    #[test]
    fn oversized_and_deeply_nested_bodies_give_nothing() {
        // About 1 MB: over the cap, not parsed.
        let huge = json_error(&"x".repeat(1 << 20));
        assert_eq!(said(ProviderKind::Openai, &huge), None);
        // Nested past serde_json's recursion limit, inside the size cap.
        let deep = format!(
            r#"{{"error":{{"message":"m","x":{}{}}}}}"#,
            "[".repeat(4000),
            "]".repeat(4000)
        );
        assert!(deep.len() < MAX_ERROR_BODY);
        assert_eq!(said(ProviderKind::Openai, &deep), None);
    }

    fn json_error(message: &str) -> String {
        serde_json::json!({"error": {"message": message, "type": "x"}}).to_string()
    }
}
