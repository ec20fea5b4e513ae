//! The detection rules: one regex per rule, each with a named group `secret` (the part that
//! is fingerprinted and redacted) and an optional check that removes known false positives.

use regex::Regex;

/// The id of the generic rule; a specific rule's finding on the same text wins over it.
pub(crate) const GENERIC: &str = "generic-secret-assignment";

/// Minimum length of a generic assignment's value.
pub(crate) const GENERIC_MIN_LEN: usize = 20;

/// Shannon entropy (bits per character) a generic value must reach, unless it is hex.
///
/// Measured on 20 000 random strings each: alphanumeric or base64 strings of 20 characters
/// have a median of 4.0 and a 1st percentile of 3.65 bits/char (the ceiling for 20
/// characters is log2(20) = 4.32), so 3.5 keeps more than 99% of random 20-character tokens
/// and every longer one. What it removes are repetitive values: `changeme_changeme_123`
/// measures 3.34, `aaaabbbbccccddddeeee1111` 2.58.
pub(crate) const GENERIC_MIN_ENTROPY: f64 = 3.5;

/// The entropy a hex-only generic value must reach. Hex has 16 symbols, so a random hex
/// string measures less: median 3.38, 1st percentile 2.90 at 20 characters; 3.26 (1st
/// percentile) at 32. 3.0 keeps about 97% of random 20-digit hex and all of 32 and more.
pub(crate) const GENERIC_MIN_ENTROPY_HEX: f64 = 3.0;

/// A rule as compiled by the scanner.
pub(crate) struct Rule {
    pub(crate) id: &'static str,
    pub(crate) regex: Regex,
    /// Whether a matched `secret` is a real finding.
    pub(crate) accept: fn(&str) -> bool,
    /// What the redacted preview shows: the first characters, or the PEM header.
    pub(crate) preview: Preview,
}

#[derive(Clone, Copy)]
pub(crate) enum Preview {
    /// The first four characters, then `…` and the length.
    Prefix,
    /// The `-----BEGIN ... PRIVATE KEY-----` line (not secret), then `…` and the length.
    PemHeader,
}

struct RuleDef {
    id: &'static str,
    pattern: &'static str,
    accept: fn(&str) -> bool,
    preview: Preview,
}

/// Every rule, specific ones first. Ids are stable: allowlist entries and fingerprints
/// refer to them.
const RULES: &[RuleDef] = &[
    RuleDef {
        // sk-ant-api03-..., sk-ant-admin01-..., sk-ant-oat01-... (about 100 characters).
        id: "anthropic-api-key",
        pattern: r"\b(?P<secret>sk-ant-[A-Za-z0-9_-]{40,})",
        accept: any,
        preview: Preview::Prefix,
    },
    RuleDef {
        // Project, service-account and admin keys, then the legacy sk- + 48 alphanumerics
        // (32 and more, for OpenAI-compatible providers using the same shape).
        id: "openai-api-key",
        pattern: r"\b(?P<secret>sk-(?:proj|svcacct|admin)-[A-Za-z0-9_-]{20,}|sk-[A-Za-z0-9]{32,}\b)",
        accept: has_digit_and_letter,
        preview: Preview::Prefix,
    },
    RuleDef {
        id: "google-api-key",
        pattern: r"\b(?P<secret>AIza[0-9A-Za-z_-]{35})(?:[^0-9A-Za-z_-]|$)",
        accept: any,
        preview: Preview::Prefix,
    },
    RuleDef {
        // Classic tokens (personal, OAuth, user-to-server, server-to-server, refresh) carry
        // 36 characters after the prefix; fine-grained personal tokens 82.
        id: "github-token",
        pattern: r"\b(?P<secret>(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{50,})",
        accept: any,
        preview: Preview::Prefix,
    },
    RuleDef {
        id: "aws-access-key-id",
        pattern: r"\b(?P<secret>(?:AKIA|ASIA)[A-Z0-9]{16})\b",
        // AWS's documentation uses ids ending in EXAMPLE (AKIAIOSFODNN7EXAMPLE); they are
        // not keys.
        accept: |s| !s.ends_with("EXAMPLE"),
        preview: Preview::Prefix,
    },
    RuleDef {
        // The header, blank lines or escaped newlines (a key pasted into a string literal),
        // optional RFC 1421 headers (Proc-Type, DEK-Info, Version), then key material. A
        // header alone, as in documentation or a PEM parser, is not a finding.
        id: "private-key",
        pattern: r"(?P<secret>-----BEGIN[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----(?:\s|\\[rn])+(?:[A-Za-z][A-Za-z-]*: ?[^\r\n\\]*(?:\s|\\[rn])+)*[A-Za-z0-9+/=]{40,})",
        accept: any,
        preview: Preview::PemHeader,
    },
    RuleDef {
        // `name = "value"` where the name says key, secret, token or password: `=`, `:`,
        // `:=`, `=>`, `==`, a Rust `: &str =`, quoted or bare (then up to the end of the
        // line, a space or one of `,;&)]}`). The value is judged by `generic_value`.
        id: GENERIC,
        pattern: r#"(?m)[A-Za-z0-9_.-]*(?i-u:key|secret|token|passw(?:or)?d|pwd|credential)[A-Za-z0-9_.-]*["'`]?\s*(?::\s*&(?:'static\s+)?str\s*)?(?::=|=>|==?|:)\s*["'`]?(?P<secret>[A-Za-z0-9+/=_.~!@#%^*-]{20,})(?:["'`\s,;&)\]}]|$)"#,
        accept: generic_value,
        preview: Preview::Prefix,
    },
];

/// Compiles every rule.
pub(crate) fn compile() -> Result<Vec<Rule>, String> {
    RULES
        .iter()
        .map(|def| {
            Ok(Rule {
                id: def.id,
                regex: Regex::new(def.pattern).map_err(|e| format!("rule {}: {e}", def.id))?,
                accept: def.accept,
                preview: def.preview,
            })
        })
        .collect()
}

/// The ids of every rule.
pub(crate) fn ids() -> impl Iterator<Item = &'static str> {
    RULES.iter().map(|r| r.id)
}

fn any(_: &str) -> bool {
    true
}

fn has_digit_and_letter(s: &str) -> bool {
    s.bytes().any(|b| b.is_ascii_digit()) && s.bytes().any(|b| b.is_ascii_alphabetic())
}

/// Whether a generic assignment's value looks like a secret: long, mixing letters and
/// digits (identifiers and prose rarely carry digits; a random 20-character token lacks one
/// with probability 3%, a 40-character one 0.1%), high entropy, and not a placeholder.
pub(crate) fn generic_value(value: &str) -> bool {
    if value.len() < GENERIC_MIN_LEN || !has_digit_and_letter(value) {
        return false;
    }
    let lower = value.to_ascii_lowercase();
    const PLACEHOLDERS: &[&str] =
        &["example", "placeholder", "changeme", "xxxx", "dummy", "redacted", "your-", "your_"];
    if PLACEHOLDERS.iter().any(|p| lower.contains(p)) {
        return false;
    }
    let threshold = if value.bytes().all(|b| b.is_ascii_hexdigit()) {
        GENERIC_MIN_ENTROPY_HEX
    } else {
        GENERIC_MIN_ENTROPY
    };
    shannon_entropy(value) >= threshold
}

/// Shannon entropy of the bytes of `s`, in bits per byte.
pub(crate) fn shannon_entropy(s: &str) -> f64 {
    let mut counts = [0u32; 256];
    for b in s.bytes() {
        counts[usize::from(b)] += 1;
    }
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = f64::from(*c) / n;
            -p * p.log2()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_compiles() {
        assert_eq!(compile().unwrap().len(), RULES.len());
    }

    #[test]
    fn entropy() {
        assert_eq!(shannon_entropy("aaaa"), 0.0);
        assert!((shannon_entropy("abcd") - 2.0).abs() < 1e-9);
    }
}
