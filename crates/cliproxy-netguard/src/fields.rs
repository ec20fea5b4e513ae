//! The fields of a request body that routing and validation read, found in one pass over the
//! body's bytes.
//!
//! The gateway forwards the body upstream byte for byte, so it never needs the body as a tree:
//! [`RequestFields`] is deserialized straight from the bytes and keeps only `model`, `stream`,
//! the output-token fields and the shape of `messages`, `input` and `contents`. Every other
//! value is parsed and dropped where it stands, without an allocation.
//!
//! A body is refused exactly when, and where, parsing it into a `serde_json::Value` would
//! refuse it, with the same error: every value, a skipped one too, goes through serde_json's
//! `deserialize_any`, the path a `Value` is parsed by. That path checks UTF-8, surrogate
//! escapes and number ranges in every string and number, and holds nesting to serde_json's
//! recursion limit (128). `serde::de::IgnoredAny` is not used for the skipped values on
//! purpose: serde_json skips those with a scanner that checks none of that and has no depth
//! limit, so it would pass on to the provider bodies that a `Value` parse (what this gateway
//! did before) refuses.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// What routing and validation read of a request body, borrowed from it where the JSON text
/// allows (an unescaped `model` is not copied).
///
/// A key given twice counts with its last value, as in a `serde_json::Value`.
///
/// ```
/// use cliproxy_netguard::RequestFields;
///
/// let fields = RequestFields::from_slice(br#"{"model": "gpt-4o", "stream": true, "messages": []}"#)?;
/// assert_eq!(fields.model(), Ok(Some("gpt-4o")));
/// assert_eq!(fields.stream(), Ok(Some(true)));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestFields<'a> {
    /// Whether the body is a JSON object; when it is not, every field is missing.
    object: bool,
    model: Option<Model<'a>>,
    stream: Option<Shape>,
    pub(crate) max_tokens: Option<Shape>,
    pub(crate) max_completion_tokens: Option<Shape>,
    pub(crate) max_output_tokens: Option<Shape>,
    /// `generationConfig.maxOutputTokens`: missing too when `generationConfig` is not an
    /// object.
    pub(crate) gemini_max_output_tokens: Option<Shape>,
    /// `messages`, its arrays with the first item that lacks a string `role`.
    pub(crate) messages: Option<Shape>,
    pub(crate) input: Option<Shape>,
    pub(crate) contents: Option<Shape>,
}

/// A field that routing reads has a JSON type it cannot have (`model` not a string,
/// `stream` not a boolean; `null` counts as missing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrongType;

impl fmt::Display for WrongType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field has the wrong JSON type")
    }
}

impl std::error::Error for WrongType {}

impl<'a> RequestFields<'a> {
    /// Reads `body` in one pass. The error is serde_json's, with its position, for a body
    /// that is not JSON; a body that is JSON but not an object is read, and
    /// [`is_object`](Self::is_object) says so.
    pub fn from_slice(body: &'a [u8]) -> serde_json::Result<Self> {
        serde_json::from_slice(body)
    }

    /// Whether the body is a JSON object.
    pub fn is_object(&self) -> bool {
        self.object
    }

    /// `model`: `None` when it is missing or `null`.
    pub fn model(&self) -> Result<Option<&str>, WrongType> {
        match &self.model {
            None | Some(Model::Other(Shape::Null)) => Ok(None),
            Some(Model::Text(text)) => Ok(Some(text)),
            Some(Model::Other(_)) => Err(WrongType),
        }
    }

    /// `stream`: `None` when it is missing or `null`.
    pub fn stream(&self) -> Result<Option<bool>, WrongType> {
        match self.stream {
            None | Some(Shape::Null) => Ok(None),
            Some(Shape::Bool(stream)) => Ok(Some(stream)),
            Some(_) => Err(WrongType),
        }
    }
}

/// The JSON type of a value and what the checks read of it: the kind of answer a
/// `serde_json::Value` of it would give to `as_u64`, `is_string`, `as_array` and `len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    Null,
    Bool(bool),
    /// The value when it is a whole number from 0 to `u64::MAX`, as `Value::as_u64` gives it:
    /// `1.0`, `1e3`, `-1` and `18446744073709551616` are numbers without one.
    Number(Option<u64>),
    String,
    /// An array; `first_without_role` is read for `messages` only (`None` elsewhere): the
    /// index of the first item that is not an object with a string `role`.
    Array {
        len: usize,
        first_without_role: Option<usize>,
    },
    Object,
}

/// `model`: its text when it is a string.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Model<'a> {
    Text(Cow<'a, str>),
    Other(Shape),
}

impl<'de> Deserialize<'de> for RequestFields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(BodyVisitor)
    }
}

/// The top level. A value other than an object is read whole and answered as a body with no
/// fields, not refused here: the caller says "not an object" in its own words, and a body
/// that is not valid JSON to its end must still be refused as such.
struct BodyVisitor;

impl<'de> Visitor<'de> for BodyVisitor {
    type Value = RequestFields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = RequestFields { object: true, ..RequestFields::default() };
        // Each key overwrites its field whole, so a repeated key keeps its last value.
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Model => fields.model = Some(map.next_value_seed(ModelSeed)?),
                Key::Stream => fields.stream = Some(map.next_value_seed(ShapeSeed::PLAIN)?),
                Key::MaxTokens => fields.max_tokens = Some(map.next_value_seed(ShapeSeed::PLAIN)?),
                Key::MaxCompletionTokens => {
                    fields.max_completion_tokens = Some(map.next_value_seed(ShapeSeed::PLAIN)?);
                }
                Key::MaxOutputTokens => {
                    fields.max_output_tokens = Some(map.next_value_seed(ShapeSeed::PLAIN)?);
                }
                Key::GenerationConfig => {
                    fields.gemini_max_output_tokens = map.next_value_seed(GenerationConfigSeed)?;
                }
                Key::Messages => fields.messages = Some(map.next_value_seed(ShapeSeed::ROLES)?),
                Key::Input => fields.input = Some(map.next_value_seed(ShapeSeed::PLAIN)?),
                Key::Contents => fields.contents = Some(map.next_value_seed(ShapeSeed::PLAIN)?),
                Key::Role | Key::GeminiMaxOutputTokens | Key::Other => {
                    map.next_value::<Skip>()?;
                }
            }
        }
        Ok(fields)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        skip_seq(seq)?;
        Ok(RequestFields::default())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(RequestFields::default())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(RequestFields::default())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(RequestFields::default())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(RequestFields::default())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(RequestFields::default())
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(RequestFields::default())
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(RequestFields::default())
    }
}

/// The object keys the checks read, top level and nested; matched on the unescaped key, as a
/// `Value` would hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Model,
    Stream,
    MaxTokens,
    MaxCompletionTokens,
    MaxOutputTokens,
    GenerationConfig,
    Messages,
    Input,
    Contents,
    /// In an item of `messages`.
    Role,
    /// `maxOutputTokens`, in `generationConfig`.
    GeminiMaxOutputTokens,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl Visitor<'_> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
        Ok(match key {
            "model" => Key::Model,
            "stream" => Key::Stream,
            "max_tokens" => Key::MaxTokens,
            "max_completion_tokens" => Key::MaxCompletionTokens,
            "max_output_tokens" => Key::MaxOutputTokens,
            "generationConfig" => Key::GenerationConfig,
            "messages" => Key::Messages,
            "input" => Key::Input,
            "contents" => Key::Contents,
            "role" => Key::Role,
            "maxOutputTokens" => Key::GeminiMaxOutputTokens,
            _ => Key::Other,
        })
    }
}

/// Reads a value's [`Shape`]; with `roles`, an array's items are checked for a string `role`.
#[derive(Clone, Copy)]
struct ShapeSeed {
    roles: bool,
}

impl ShapeSeed {
    const PLAIN: Self = Self { roles: false };
    const ROLES: Self = Self { roles: true };
}

impl<'de> DeserializeSeed<'de> for ShapeSeed {
    type Value = Shape;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Shape, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ShapeSeed {
    type Value = Shape;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Shape, E> {
        Ok(Shape::Bool(value))
    }

    // serde_json calls this for negative integers only; a `Value` would still hold a
    // non-negative one as an unsigned integer, so this does too.
    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Shape, E> {
        Ok(Shape::Number(u64::try_from(value).ok()))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Shape, E> {
        Ok(Shape::Number(Some(value)))
    }

    // A `Value` holds a float that is not finite as `null`. serde_json refuses numbers out of
    // range before they get here, but the two readings stay the same either way.
    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Shape, E> {
        Ok(if value.is_finite() { Shape::Number(None) } else { Shape::Null })
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Shape, E> {
        Ok(Shape::String)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Shape, E> {
        Ok(Shape::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Shape, E> {
        Ok(Shape::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
        let mut len = 0;
        let mut first_without_role = None;
        if self.roles {
            while let Some(has_role) = seq.next_element_seed(RoleSeed)? {
                if !has_role && first_without_role.is_none() {
                    first_without_role = Some(len);
                }
                len += 1;
            }
        } else {
            while seq.next_element::<Skip>()?.is_some() {
                len += 1;
            }
        }
        Ok(Shape::Array { len, first_without_role })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Shape, A::Error> {
        skip_map(map)?;
        Ok(Shape::Object)
    }
}

/// Reads `model`, keeping its text when it is a string.
struct ModelSeed;

impl<'de> DeserializeSeed<'de> for ModelSeed {
    type Value = Model<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Model<'de>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ModelSeed {
    type Value = Model<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_borrowed_str<E: de::Error>(self, value: &'de str) -> Result<Model<'de>, E> {
        Ok(Model::Text(Cow::Borrowed(value)))
    }

    // An escaped string is unescaped into serde_json's scratch buffer, which is not the body:
    // only then is the text copied.
    fn visit_str<E: de::Error>(self, value: &str) -> Result<Model<'de>, E> {
        Ok(Model::Text(Cow::Owned(value.to_owned())))
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Model<'de>, E> {
        ShapeSeed::PLAIN.visit_bool(value).map(Model::Other)
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Model<'de>, E> {
        ShapeSeed::PLAIN.visit_i64(value).map(Model::Other)
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Model<'de>, E> {
        ShapeSeed::PLAIN.visit_u64(value).map(Model::Other)
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Model<'de>, E> {
        ShapeSeed::PLAIN.visit_f64(value).map(Model::Other)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Model<'de>, E> {
        Ok(Model::Other(Shape::Null))
    }

    fn visit_none<E: de::Error>(self) -> Result<Model<'de>, E> {
        Ok(Model::Other(Shape::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Model<'de>, A::Error> {
        ShapeSeed::PLAIN.visit_seq(seq).map(Model::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Model<'de>, A::Error> {
        ShapeSeed::PLAIN.visit_map(map).map(Model::Other)
    }
}

/// Reads an item of `messages`: whether it is an object whose `role` (its last one) is a
/// string.
struct RoleSeed;

impl<'de> DeserializeSeed<'de> for RoleSeed {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RoleSeed {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let mut has_role = false;
        while let Some(key) = map.next_key::<Key>()? {
            if key == Key::Role {
                has_role = map.next_value_seed(ShapeSeed::PLAIN)? == Shape::String;
            } else {
                map.next_value::<Skip>()?;
            }
        }
        Ok(has_role)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<bool, A::Error> {
        skip_seq(seq)?;
        Ok(false)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_none<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
}

/// Reads `generationConfig`: the shape of its (last) `maxOutputTokens`, or `None` when it has
/// none or is not an object.
struct GenerationConfigSeed;

impl<'de> DeserializeSeed<'de> for GenerationConfigSeed {
    type Value = Option<Shape>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<Shape>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for GenerationConfigSeed {
    type Value = Option<Shape>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<Shape>, A::Error> {
        let mut max_output_tokens = None;
        while let Some(key) = map.next_key::<Key>()? {
            if key == Key::GeminiMaxOutputTokens {
                max_output_tokens = Some(map.next_value_seed(ShapeSeed::PLAIN)?);
            } else {
                map.next_value::<Skip>()?;
            }
        }
        Ok(max_output_tokens)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Option<Shape>, A::Error> {
        skip_seq(seq)?;
        Ok(None)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Option<Shape>, E> {
        Ok(None)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Option<Shape>, E> {
        Ok(None)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Option<Shape>, E> {
        Ok(None)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Option<Shape>, E> {
        Ok(None)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Option<Shape>, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<Shape>, E> {
        Ok(None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Option<Shape>, E> {
        Ok(None)
    }
}

/// A value parsed and dropped: checked as a `Value` parse would check it (see the module
/// documentation for why this is not `IgnoredAny`), but nothing kept and nothing allocated.
struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SkipVisitor)
    }
}

struct SkipVisitor;

impl<'de> Visitor<'de> for SkipVisitor {
    type Value = Skip;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_none<E: de::Error>(self) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Skip, A::Error> {
        skip_seq(seq).map(|()| Skip)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Skip, A::Error> {
        skip_map(map).map(|()| Skip)
    }
}

/// Parses and drops the rest of an array.
fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<Skip>()?.is_some() {}
    Ok(())
}

/// Parses and drops the rest of an object, keys included (a key is checked as any string).
fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_key::<Skip>()?.is_some() {
        map.next_value::<Skip>()?;
    }
    Ok(())
}
