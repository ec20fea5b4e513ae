//! Helpers the Anthropic and Gemini codecs share: reading a field that is a string or a list
//! of blocks without buffering it, naming the field a malformed body gets wrong, and
//! writing SSE frames.

use crate::error::json_problem;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{DeserializeOwned, SeqAccess, Visitor};
use serde_json::Value;

use crate::error::Error;

/// A field that is either a plain string or a list of blocks (Anthropic's `system`,
/// `content` and `tool_result.content`). Read by hand rather than as an untagged enum, which
/// would buffer the whole field before trying each shape.
#[derive(Debug)]
pub(crate) enum TextOrBlocks<T> {
    /// The string form.
    Text(String),
    /// The list form.
    Blocks(Vec<T>),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for TextOrBlocks<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = TextOrBlocks<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of blocks")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(TextOrBlocks::Text(v.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(TextOrBlocks::Text(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut blocks = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
                while let Some(block) = seq.next_element()? {
                    blocks.push(block);
                }
                Ok(TextOrBlocks::Blocks(blocks))
            }
        }
        deserializer.deserialize_any(V(PhantomData))
    }
}

/// Parses a body into its typed form; on failure, finds which field is wrong with `locate`
/// (which only runs on that path, so a good body pays nothing for it).
pub(crate) fn parse<T: DeserializeOwned>(
    body: &[u8],
    locate: impl FnOnce(&Value) -> Option<(String, String)>,
) -> Result<T, Error> {
    // Serde would also read a struct from an array, by position: a body must be an object.
    if !body.trim_ascii_start().starts_with(b"{") {
        return Err(Error::invalid("body", "expected a JSON object"));
    }
    serde_json::from_slice(body).map_err(|error| {
        let Ok(value) = serde_json::from_slice::<Value>(body) else {
            return Error::invalid("body", json_problem(&error));
        };
        if !value.is_object() {
            return Error::invalid("body", "expected a JSON object");
        }
        match locate(&value) {
            Some((field, problem)) => Error::invalid(field, problem),
            None => Error::invalid("body", json_problem(&error)),
        }
    })
}

/// The key of the object `value` whose value alone makes `T` fail to parse, with serde's
/// complaint. Each key is tried on its own (with the object's `type`, which selects the
/// shape), so that a wrong type is pinned on its field; the typed forms have no required
/// fields, which the codecs check themselves with their path.
pub(crate) fn culprit<T: DeserializeOwned>(value: &Value) -> Option<(String, String)> {
    let object = value.as_object()?;
    for (key, field) in object {
        let mut alone = serde_json::Map::new();
        if let Some(kind) = object.get("type") {
            alone.insert("type".to_owned(), kind.clone());
        }
        alone.insert(key.clone(), field.clone());
        if let Err(error) = T::deserialize(Value::Object(alone)) {
            return Some((key.clone(), json_problem(&error)));
        }
    }
    None
}

/// Descends into the list under `key` of an object: the first element that makes `T` fail,
/// as `key[i]` (with the element's own culprit key appended by `inner`).
pub(crate) fn culprit_in_list<T: DeserializeOwned>(
    value: &Value,
    key: &str,
    inner: impl Fn(&Value) -> Option<(String, String)>,
) -> Option<(String, String)> {
    let list = value.get(key)?.as_array()?;
    list.iter().enumerate().find_map(|(i, element)| {
        T::deserialize(element).err().map(|error| match inner(element) {
            Some((field, problem)) => (format!("{key}[{i}].{field}"), problem),
            None => (format!("{key}[{i}]"), json_problem(&error)),
        })
    })
}

/// An error body that is not the format's own shape: its text, cut to a few hundred bytes
/// at a character boundary, so that an HTML error page does not flood the client.
pub(crate) fn raw_message(body: &[u8]) -> String {
    const LIMIT: usize = 300;
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.len() <= LIMIT {
        return text.to_owned();
    }
    let mut end = LIMIT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", text.get(..end).unwrap_or_default())
}

/// Appends `value` as JSON. Serialising the codecs' own types into a `Vec` cannot fail (no
/// maps with non-string keys, no failing `Serialize` impls), so the error is ignored.
pub(crate) fn write_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    let _ = serde_json::to_writer(&mut *out, value);
}

/// A `String` field's value as JSON text (for arguments kept as text).
pub(crate) fn to_json_string(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// A short name from a closed set the formats use (`type`, `role`), read without
/// allocating when it is one of them: a request names one per message and per block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tag(std::borrow::Cow<'static, str>);

/// The names [`Tag`] knows.
const TAGS: &[&str] = &[
    "text",
    "image",
    "tool_use",
    "tool_result",
    "thinking",
    "redacted_thinking",
    "document",
    "user",
    "assistant",
    "model",
    "base64",
    "url",
];

impl std::ops::Deref for Tag {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Tag {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Tag;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Tag, E> {
                Ok(Tag(match TAGS.iter().find(|tag| **tag == v) {
                    Some(tag) => std::borrow::Cow::Borrowed(tag),
                    None => std::borrow::Cow::Owned(v.to_owned()),
                }))
            }
        }
        deserializer.deserialize_str(V)
    }
}
