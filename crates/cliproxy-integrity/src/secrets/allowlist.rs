//! The allowlist: findings that are known not to be secrets (test fixtures, documentation).

use std::path::Path;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde::Deserialize;

use super::{Error, Finding, rules};
use crate::guard::git::printable;

/// Findings that are not secrets, loaded from a TOML file of `[[allow]]` entries.
///
/// An entry allows a finding when every condition it sets holds: its `paths` globs match the
/// file, its `rules` list the rule id, its `fingerprints` list the finding's fingerprint. An
/// entry must set `paths` or `fingerprints` (a rule cannot be switched off everywhere) and
/// give a `reason`.
///
/// ```toml
/// [[allow]]
/// reason = "test fixtures assign fake tokens to variables named `token`"
/// paths = ["tests/**", "crates/*/tests/**"]
/// rules = ["generic-secret-assignment"]
///
/// [[allow]]
/// reason = "the documented example key in docs/setup.md"
/// fingerprints = ["sha256:4f2c..."]
/// ```
#[derive(Debug, Clone, Default)]
pub struct Allowlist {
    entries: Vec<Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    paths: Option<GlobSet>,
    rules: Vec<String>,
    fingerprints: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowlistFile {
    #[serde(default)]
    allow: Vec<EntryFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryFile {
    reason: String,
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    rules: Vec<String>,
    #[serde(default)]
    fingerprints: Vec<String>,
}

impl Allowlist {
    /// Reads and validates an allowlist file; errors name the file and the key.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| Error::ReadAllowlist { path: path.to_owned(), source })?;
        Self::from_toml(&text).map_err(|e| match e {
            Error::Allowlist { path: None, message } => {
                Error::Allowlist { path: Some(path.to_owned()), message }
            }
            other => other,
        })
    }

    /// Parses and validates an allowlist. Unknown keys, unknown rule ids, malformed
    /// fingerprints and entries that would allow a rule everywhere are refused.
    pub fn from_toml(text: &str) -> Result<Self, Error> {
        let invalid = |message: String| Error::Allowlist { path: None, message };
        let file: AllowlistFile = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let mut entries = Vec::with_capacity(file.allow.len());
        for (index, entry) in file.allow.into_iter().enumerate() {
            let key = format!("allow[{index}]");
            if entry.reason.trim().is_empty() {
                return Err(invalid(format!("{key}.reason: say why these findings are allowed")));
            }
            if entry.paths.is_empty() && entry.fingerprints.is_empty() {
                return Err(invalid(format!(
                    "{key}: set `paths` or `fingerprints` (an entry cannot allow a rule everywhere)"
                )));
            }
            for (i, rule) in entry.rules.iter().enumerate() {
                if !rules::ids().any(|id| id == rule) {
                    let known: Vec<&str> = rules::ids().collect();
                    return Err(invalid(format!(
                        "{key}.rules[{i}]: unknown rule `{}` (rules: {})",
                        printable(rule),
                        known.join(", ")
                    )));
                }
            }
            for (i, fingerprint) in entry.fingerprints.iter().enumerate() {
                let valid = fingerprint.strip_prefix("sha256:").is_some_and(|hex| {
                    hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                });
                if !valid {
                    return Err(invalid(format!(
                        "{key}.fingerprints[{i}]: expected `sha256:` and 64 lower-case hex digits, as the scanner prints them"
                    )));
                }
            }
            let paths = if entry.paths.is_empty() {
                None
            } else {
                let mut set = GlobSetBuilder::new();
                for (i, pattern) in entry.paths.iter().enumerate() {
                    let glob =
                        GlobBuilder::new(pattern).literal_separator(true).build().map_err(|e| {
                            invalid(format!(
                                "{key}.paths[{i}]: `{}` is not a valid glob: {e}",
                                printable(pattern)
                            ))
                        })?;
                    set.add(glob);
                }
                Some(set.build().map_err(|e| invalid(format!("{key}.paths: {e}")))?)
            };
            entries.push(Entry { paths, rules: entry.rules, fingerprints: entry.fingerprints });
        }
        Ok(Self { entries })
    }

    /// Whether a finding is allowed.
    pub fn allows(&self, finding: &Finding) -> bool {
        self.entries.iter().any(|entry| {
            entry.paths.as_ref().is_none_or(|set| set.is_match(&finding.path))
                && (entry.rules.is_empty() || entry.rules.iter().any(|r| r == finding.rule))
                && (entry.fingerprints.is_empty()
                    || entry.fingerprints.contains(&finding.fingerprint))
        })
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the allowlist has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
