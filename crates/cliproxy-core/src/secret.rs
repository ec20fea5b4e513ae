use std::fmt;

use serde::{Deserialize, Deserializer};
use zeroize::Zeroize;

/// A key or token: redacted when printed, zeroized when dropped.
///
/// There is deliberately no `Serialize`, no `PartialEq` (comparisons of secrets must be
/// constant-time and are done where keys are checked) and no `Deref`: reading the value takes
/// an explicit [`Secret::expose`], which is easy to find in review.
#[derive(Clone)]
pub struct Secret(Box<str>);

impl Secret {
    /// The secret value. Call it only where the value is sent or compared.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is the empty string (an unset `${VAR}`, for instance).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The length of the secret in bytes; safe to print.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value.into_boxed_str())
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLANTED: &str = "sk-planted-secret-4f1c2a";

    #[test]
    fn debug_and_display_never_show_the_value() {
        let secret = Secret::from(PLANTED.to_owned());
        let printed = format!("{secret:?} {secret} {secret:#?} {:?}", Some(&secret));
        assert!(!printed.contains(PLANTED), "{printed}");
        assert!(printed.contains("[redacted]"));
    }

    #[test]
    fn deserializes_from_a_string_and_exposes_on_request() {
        let secret: Secret = serde_json::from_str(&format!("\"{PLANTED}\"")).unwrap();
        assert_eq!(secret.expose(), PLANTED);
        assert_eq!(secret.len(), PLANTED.len());
        assert!(!secret.is_empty());
    }

    #[test]
    fn a_struct_holding_a_secret_debug_prints_redacted() {
        #[derive(Debug)]
        #[allow(dead_code, reason = "only the Debug output is under test")]
        struct Holder {
            name: &'static str,
            key: Secret,
        }
        let holder = Holder { name: "ci", key: Secret::from(PLANTED.to_owned()) };
        let printed = format!("{holder:?}");
        assert!(!printed.contains(PLANTED), "{printed}");
    }
}
