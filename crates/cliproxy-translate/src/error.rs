//! What can go wrong translating: a request or reply that is not what its format says, or a
//! field the target format has no counterpart for. The texts name the field in the client's
//! format and the target format; the caller adds its provider's name.

use crate::Format;

/// A translation error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The body is not JSON, or a field has the wrong type or is missing: the message names
    /// the field by its path in the body's own format (`messages[2].content[0].type`).
    #[error("{field}: {problem}")]
    Invalid {
        /// Where, as a path into the body.
        field: String,
        /// What is wrong.
        problem: String,
    },
    /// A field that would change the output has no counterpart in the target format.
    #[error("{field} has no counterpart in the {target} API")]
    Unsupported {
        /// The field, by its path in the client's format.
        field: String,
        /// The format it could not be translated to.
        target: Format,
    },
    /// A stream event from the provider that is not what its format says.
    #[error("stream event {event}: {problem}")]
    Stream {
        /// The event's name (or `data` for formats without names).
        event: String,
        /// What is wrong.
        problem: String,
    },
}

impl Error {
    /// An [`Error::Invalid`].
    pub fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self::Invalid { field: field.into(), problem: problem.into() }
    }

    /// An [`Error::Unsupported`].
    pub fn unsupported(field: impl Into<String>, target: Format) -> Self {
        Self::Unsupported { field: field.into(), target }
    }

    /// An [`Error::Stream`].
    pub fn stream(event: impl Into<String>, problem: impl Into<String>) -> Self {
        Self::Stream { event: event.into(), problem: problem.into() }
    }
}

/// serde_json's complaint about a body, without the values it quotes: `invalid type: string
/// "…", expected a boolean at line 1 column 9`. A client's prompt or a provider's reply may
/// hold anything, and these texts reach the client, the access log and the audit line.
pub(crate) fn json_problem(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    // `unknown variant `VALUE`, expected one of …`: the value is the body's.
    if let Some(after) = rest.strip_prefix("unknown variant `")
        && let Some(end) = after.find('`')
    {
        out.push_str("unknown variant `…`");
        rest = &after[end + 1..];
    }
    let (mut quoted, mut escaped) = (false, false);
    for c in rest.chars() {
        if quoted {
            match (escaped, c) {
                (false, '\\') => escaped = true,
                (false, '"') => {
                    out.push_str("…\"");
                    quoted = false;
                }
                _ => escaped = false,
            }
        } else {
            out.push(c);
            quoted = c == '"';
        }
    }
    out
}

/// The result of a translation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_problems_keep_the_place_and_drop_the_values() {
        let error = serde_json::from_str::<bool>(r#""sk-planted \" secret""#).unwrap_err();
        let problem = json_problem(&error);
        assert!(!problem.contains("planted") && !problem.contains("secret"), "{problem}");
        assert!(problem.starts_with("invalid type: string \"…\""), "{problem}");
        assert!(problem.contains("expected a boolean at line 1 column"), "{problem}");

        #[derive(Debug, serde::Deserialize)]
        #[serde(rename_all = "lowercase")]
        enum Role {
            User,
        }
        let error = serde_json::from_str::<Role>(r#""sk-planted""#).unwrap_err();
        let problem = json_problem(&error);
        assert!(!problem.contains("planted"), "{problem}");
        assert!(problem.contains("expected `user`"), "the expected names stay: {problem}");
    }
}
