/// Whether `text` matches `pattern`, where `*` in the pattern matches any run of characters
/// (the empty run included) and every other character matches itself.
///
/// This is the only wildcard model names need (`claude-*`, `*-mini`, `gpt-4*-preview`); it
/// runs in O(pattern × text) at worst, never backtracks exponentially, and does not allocate.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    // Position of the last `*` seen and the text position it was tried against.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            // Let the last `*` swallow one more byte and retry from there.
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn exact_names_match_only_themselves() {
        assert!(glob_match("gpt-4o", "gpt-4o"));
        assert!(!glob_match("gpt-4o", "gpt-4o-mini"));
        assert!(!glob_match("gpt-4o", "gpt-4"));
        assert!(!glob_match("", "x"));
        assert!(glob_match("", ""));
    }

    #[test]
    fn stars_match_any_run() {
        assert!(glob_match("claude-*", "claude-sonnet-4"));
        assert!(glob_match("claude-*", "claude-"));
        assert!(!glob_match("claude-*", "claud"));
        assert!(glob_match("*-mini", "gpt-4o-mini"));
        assert!(glob_match("gpt-*-preview", "gpt-4.1-x-preview"));
        assert!(!glob_match("gpt-*-preview", "gpt-4.1-previewx"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "aXbYbZc"));
        assert!(!glob_match("a*b*c", "aXbYbZ"));
    }

    #[test]
    fn hostile_patterns_finish_quickly() {
        let text = "a".repeat(10_000);
        let pattern = format!("{}b", "*a".repeat(50));
        assert!(!glob_match(&pattern, &text));
    }
}
