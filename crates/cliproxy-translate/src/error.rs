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

/// The result of a translation.
pub type Result<T, E = Error> = std::result::Result<T, E>;
