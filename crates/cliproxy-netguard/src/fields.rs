//! The fields of a request body that routing and validation read, found in one pass over the
//! body's bytes.
//!
//! The gateway forwards the body upstream byte for byte, so it never needs the body as a tree:
//! [`RequestFields`] is deserialized straight from the bytes and keeps only `model`, `stream`,
//! the output-token fields (every spelling the providers accept) and the shape of `messages`,
//! `input` and `contents`. Every other value is parsed and dropped where it stands, without an
//! allocation.
//!
//! A body is refused exactly when, and where, parsing it into a `serde_json::Value` would
//! refuse it, with the same error: every value, a skipped one too, goes through serde_json's
//! `deserialize_any`, the path a `Value` is parsed by. That path checks UTF-8, surrogate
//! escapes and number ranges in every string and number, and holds nesting to serde_json's
//! recursion limit (128). `serde::de::IgnoredAny` is not used for the skipped values on
//! purpose: serde_json skips those with a scanner that checks none of that and has no depth
//! limit, so it would pass on to the provider bodies that a `Value` parse (what this gateway
//! did before) refuses.
//!
//! The same pass notes whether any object, at any depth, has a key twice (compared unescaped,
//! as a provider's parser compares them): this reader keeps the last value, a provider may
//! keep the first, so validation refuses such a body. The keys of the objects still open sit
//! on one stack of 16-byte entries, slices of the body (an escaped key is the only copy);
//! when an object ends, its keys are compared pairwise, or sorted when there are many, then
//! dropped. The stack holds the keys of the objects on one path from the top, and a body with
//! a million keys in one object costs one sort, not a million scans.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// What routing and validation read of a request body, borrowed from it where the JSON text
/// allows (an unescaped `model` is not copied).
///
/// A key given twice counts with its last value, as in a `serde_json::Value`, and
/// [`has_repeated_key`](Self::has_repeated_key) says so: validation refuses the body.
///
/// ```
/// use cliproxy_netguard::RequestFields;
///
/// let fields = RequestFields::from_slice(br#"{"model": "gpt-4o", "stream": true, "messages": []}"#)?;
/// assert_eq!(fields.model(), Ok(Some("gpt-4o")));
/// assert_eq!(fields.stream(), Ok(Some(true)));
/// assert!(!fields.has_repeated_key());
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestFields<'a> {
    /// Whether the body is a JSON object; when it is not, every field is missing.
    object: bool,
    /// Whether some object in the body has a key twice.
    repeated_key: bool,
    model: Option<Model<'a>>,
    stream: Option<Shape>,
    pub(crate) max_tokens: Option<Shape>,
    pub(crate) max_completion_tokens: Option<Shape>,
    pub(crate) max_output_tokens: Option<Shape>,
    /// `generationConfig`.
    pub(crate) generation_config: Option<GenerationConfig>,
    /// `generation_config`: Google reads a field's proto name as well as its JSON name.
    pub(crate) generation_config_snake: Option<GenerationConfig>,
    /// `messages`, its arrays with the first item that lacks a string `role`.
    pub(crate) messages: Option<Shape>,
    pub(crate) input: Option<Shape>,
    pub(crate) contents: Option<Shape>,
    /// `stream_options`: `include_usage` when it is an object that has one.
    stream_options: Option<Option<Shape>>,
}

/// What an OpenAI chat request's `stream_options` says about usage in a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UsageOption {
    /// The body has no `stream_options`.
    Missing,
    /// `stream_options.include_usage` is `true`: the client asked for the usage chunk.
    Asked,
    /// `stream_options` is there (`null`, or an object whose `include_usage` is missing or
    /// not `true`, or another type) and does not ask for usage.
    NotAsked,
}

/// What is read of a Gemini generation config: its output-token field under both of the
/// names Google accepts. Both are missing when the config is not an object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct GenerationConfig {
    /// `maxOutputTokens`.
    pub(crate) camel: Option<Shape>,
    /// `max_output_tokens`.
    pub(crate) snake: Option<Shape>,
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

    /// Whether an object somewhere in the body has the same key twice (after unescaping).
    pub fn has_repeated_key(&self) -> bool {
        self.repeated_key
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

    /// Whether `stream_options.include_usage` asks for the usage of a stream.
    pub fn usage_option(&self) -> UsageOption {
        match self.stream_options {
            None => UsageOption::Missing,
            Some(Some(Shape::Bool(true))) => UsageOption::Asked,
            Some(_) => UsageOption::NotAsked,
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
        let mut keys = Keys::new();
        let mut fields = deserializer.deserialize_any(BodyVisitor { keys: &mut keys })?;
        fields.repeated_key = keys.repeated;
        Ok(fields)
    }
}

/// The keys of the objects still open, to find a key given twice in one of them.
struct Keys<'de> {
    /// Outermost object first: an object's keys are the tail that starts where the stack
    /// ended when the object began.
    stack: Vec<KeyText<'de>>,
    /// The escaped keys, unescaped: serde_json unescapes into a scratch buffer that the next
    /// string overwrites, so these are the only keys copied. They stay until the body is read
    /// (they are rare, and bounded by the body).
    escaped: Vec<Box<str>>,
    /// Set at the first repeated key; from then on nothing more is kept, the answer is known.
    repeated: bool,
}

/// One key on the stack. `Copy`, so dropping an object's keys is a length change.
#[derive(Debug, Clone, Copy)]
enum KeyText<'de> {
    /// The body's own bytes (a key without escapes).
    Borrowed(&'de str),
    /// An index into [`Keys::escaped`].
    Escaped(usize),
}

/// Up to this many keys, an object's keys are compared pairwise (cheaper than a sort for the
/// few keys of the objects real requests carry); above it, they are sorted, so that a body
/// of many keys costs `n log n` comparisons, not `n²`.
const PAIRWISE_KEYS: usize = 8;

impl<'de> Keys<'de> {
    fn new() -> Self {
        // Enough for the top level and a message or two without growing.
        Self { stack: Vec::with_capacity(16), escaped: Vec::new(), repeated: false }
    }

    /// Where the keys of an object that begins now will start.
    fn open(&self) -> usize {
        self.stack.len()
    }

    /// Notes a key of the body's own bytes.
    fn push_borrowed(&mut self, key: &'de str) {
        if !self.repeated {
            self.stack.push(KeyText::Borrowed(key));
        }
    }

    /// Notes an escaped key, unescaped; it is copied only while the answer is still open.
    fn push_escaped(&mut self, key: &str) {
        if !self.repeated {
            self.escaped.push(key.into());
            self.stack.push(KeyText::Escaped(self.escaped.len() - 1));
        }
    }

    fn text(&self, key: KeyText<'de>) -> &str {
        match key {
            KeyText::Borrowed(key) => key,
            KeyText::Escaped(index) => self.escaped.get(index).map_or("", |key| key),
        }
    }

    /// Ends the object whose keys start at `start`: compares them, then drops them.
    #[inline]
    fn close(&mut self, start: usize) {
        if !self.repeated && self.stack.len() > start + 1 {
            self.repeated = if self.stack.len() - start <= PAIRWISE_KEYS {
                self.repeated_pairwise(start)
            } else {
                self.repeated_sorted(start)
            };
        }
        self.stack.truncate(start);
    }

    fn repeated_pairwise(&self, start: usize) -> bool {
        let object = &self.stack[start..];
        (1..object.len()).any(|i| {
            let key = self.text(object[i]);
            object[..i].iter().any(|&earlier| self.text(earlier) == key)
        })
    }

    /// Sorts the object's keys in place. Out of line: only an object of many keys gets here,
    /// and the common path stays small.
    #[cold]
    #[inline(never)]
    fn repeated_sorted(&mut self, start: usize) -> bool {
        // The stack is taken out for the sort so that `text` can still read the escaped keys.
        let mut stack = std::mem::take(&mut self.stack);
        let object = &mut stack[start..];
        object.sort_unstable_by(|&a, &b| self.text(a).cmp(self.text(b)));
        let repeated = object.windows(2).any(|pair| self.text(pair[0]) == self.text(pair[1]));
        self.stack = stack;
        repeated
    }
}

/// The top level. A value other than an object is read whole and answered as a body with no
/// fields, not refused here: the caller says "not an object" in its own words, and a body
/// that is not valid JSON to its end must still be refused as such.
struct BodyVisitor<'k, 'de> {
    keys: &'k mut Keys<'de>,
}

impl<'de> Visitor<'de> for BodyVisitor<'_, 'de> {
    type Value = RequestFields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let keys = self.keys;
        let start = keys.open();
        let mut fields = RequestFields { object: true, ..RequestFields::default() };
        // Each key overwrites its field whole, so a repeated key keeps its last value (and
        // the body is refused by validation anyway).
        while let Some(key) = map.next_key_seed(KeySeed(keys))? {
            match key {
                Key::Model => fields.model = Some(map.next_value_seed(ModelSeed(keys))?),
                Key::Stream => fields.stream = Some(map.next_value_seed(ShapeSeed::plain(keys))?),
                Key::MaxTokens => {
                    fields.max_tokens = Some(map.next_value_seed(ShapeSeed::plain(keys))?)
                }
                Key::MaxCompletionTokens => {
                    fields.max_completion_tokens =
                        Some(map.next_value_seed(ShapeSeed::plain(keys))?);
                }
                Key::MaxOutputTokens => {
                    fields.max_output_tokens = Some(map.next_value_seed(ShapeSeed::plain(keys))?);
                }
                Key::GenerationConfig => {
                    fields.generation_config =
                        Some(map.next_value_seed(GenerationConfigSeed(keys))?);
                }
                Key::GenerationConfigSnake => {
                    fields.generation_config_snake =
                        Some(map.next_value_seed(GenerationConfigSeed(keys))?);
                }
                Key::Messages => {
                    fields.messages = Some(map.next_value_seed(ShapeSeed::roles(keys))?);
                }
                Key::Input => fields.input = Some(map.next_value_seed(ShapeSeed::plain(keys))?),
                Key::Contents => {
                    fields.contents = Some(map.next_value_seed(ShapeSeed::plain(keys))?)
                }
                Key::StreamOptions => {
                    fields.stream_options = Some(map.next_value_seed(StreamOptionsSeed(keys))?);
                }
                Key::Role | Key::GeminiMaxOutputTokens | Key::IncludeUsage | Key::Other => {
                    map.next_value_seed(Skip(keys))?;
                }
            }
        }
        keys.close(start);
        Ok(fields)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        skip_seq(seq, self.keys)?;
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
    /// `max_output_tokens`: at the top level (Responses) and in a Gemini generation config.
    MaxOutputTokens,
    GenerationConfig,
    GenerationConfigSnake,
    Messages,
    Input,
    Contents,
    /// In an item of `messages`.
    Role,
    /// `maxOutputTokens`, in a Gemini generation config.
    GeminiMaxOutputTokens,
    StreamOptions,
    /// `include_usage`, in `stream_options`.
    IncludeUsage,
    Other,
}

impl Key {
    fn of(key: &str) -> Self {
        match key {
            "model" => Self::Model,
            "stream" => Self::Stream,
            "max_tokens" => Self::MaxTokens,
            "max_completion_tokens" => Self::MaxCompletionTokens,
            "max_output_tokens" => Self::MaxOutputTokens,
            "generationConfig" => Self::GenerationConfig,
            "generation_config" => Self::GenerationConfigSnake,
            "messages" => Self::Messages,
            "input" => Self::Input,
            "contents" => Self::Contents,
            "role" => Self::Role,
            "maxOutputTokens" => Self::GeminiMaxOutputTokens,
            "stream_options" => Self::StreamOptions,
            "include_usage" => Self::IncludeUsage,
            _ => Self::Other,
        }
    }
}

/// Reads an object key: which [`Key`] it is, and notes it in the open object's keys.
struct KeySeed<'k, 'de>(&'k mut Keys<'de>);

impl<'de> DeserializeSeed<'de> for KeySeed<'_, 'de> {
    type Value = Key;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Key, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_, 'de> {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E: de::Error>(self, key: &'de str) -> Result<Key, E> {
        self.0.push_borrowed(key);
        Ok(Key::of(key))
    }

    // An escaped key, unescaped into serde_json's scratch buffer.
    fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
        self.0.push_escaped(key);
        Ok(Key::of(key))
    }
}

/// Reads a value's [`Shape`]; with `roles`, an array's items are checked for a string `role`.
struct ShapeSeed<'k, 'de> {
    roles: bool,
    keys: &'k mut Keys<'de>,
}

impl<'k, 'de> ShapeSeed<'k, 'de> {
    fn plain(keys: &'k mut Keys<'de>) -> Self {
        Self { roles: false, keys }
    }

    fn roles(keys: &'k mut Keys<'de>) -> Self {
        Self { roles: true, keys }
    }
}

impl<'de> DeserializeSeed<'de> for ShapeSeed<'_, 'de> {
    type Value = Shape;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Shape, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ShapeSeed<'_, 'de> {
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
        let keys = self.keys;
        let mut len = 0;
        let mut first_without_role = None;
        if self.roles {
            while let Some(has_role) = seq.next_element_seed(RoleSeed(keys))? {
                if !has_role && first_without_role.is_none() {
                    first_without_role = Some(len);
                }
                len += 1;
            }
        } else {
            while seq.next_element_seed(Skip(keys))?.is_some() {
                len += 1;
            }
        }
        Ok(Shape::Array { len, first_without_role })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Shape, A::Error> {
        skip_map(map, self.keys)?;
        Ok(Shape::Object)
    }
}

/// Reads the key of an object that is skipped: notes it, without matching it to a [`Key`].
struct SkipKey<'k, 'de>(&'k mut Keys<'de>);

impl<'de> DeserializeSeed<'de> for SkipKey<'_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for SkipKey<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E: de::Error>(self, key: &'de str) -> Result<(), E> {
        self.0.push_borrowed(key);
        Ok(())
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<(), E> {
        self.0.push_escaped(key);
        Ok(())
    }
}

/// Reads `model`, keeping its text when it is a string.
struct ModelSeed<'k, 'de>(&'k mut Keys<'de>);

impl<'de> DeserializeSeed<'de> for ModelSeed<'_, 'de> {
    type Value = Model<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Model<'de>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ModelSeed<'_, 'de> {
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
        ShapeSeed::plain(self.0).visit_bool(value).map(Model::Other)
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Model<'de>, E> {
        ShapeSeed::plain(self.0).visit_i64(value).map(Model::Other)
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Model<'de>, E> {
        ShapeSeed::plain(self.0).visit_u64(value).map(Model::Other)
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Model<'de>, E> {
        ShapeSeed::plain(self.0).visit_f64(value).map(Model::Other)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Model<'de>, E> {
        Ok(Model::Other(Shape::Null))
    }

    fn visit_none<E: de::Error>(self) -> Result<Model<'de>, E> {
        Ok(Model::Other(Shape::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Model<'de>, A::Error> {
        ShapeSeed::plain(self.0).visit_seq(seq).map(Model::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Model<'de>, A::Error> {
        ShapeSeed::plain(self.0).visit_map(map).map(Model::Other)
    }
}

/// Reads an item of `messages`: whether it is an object whose `role` (its last one) is a
/// string.
struct RoleSeed<'k, 'de>(&'k mut Keys<'de>);

impl<'de> DeserializeSeed<'de> for RoleSeed<'_, 'de> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RoleSeed<'_, 'de> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let keys = self.0;
        let start = keys.open();
        let mut has_role = false;
        while let Some(key) = map.next_key_seed(KeySeed(keys))? {
            if key == Key::Role {
                has_role = map.next_value_seed(ShapeSeed::plain(keys))? == Shape::String;
            } else {
                map.next_value_seed(Skip(keys))?;
            }
        }
        keys.close(start);
        Ok(has_role)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<bool, A::Error> {
        skip_seq(seq, self.0)?;
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

/// Reads a Gemini generation config (`generationConfig` or `generation_config`): the shapes
/// of its (last) `maxOutputTokens` and `max_output_tokens`, both missing when it is not an
/// object.
struct GenerationConfigSeed<'k, 'de>(&'k mut Keys<'de>);

impl<'de> DeserializeSeed<'de> for GenerationConfigSeed<'_, 'de> {
    type Value = GenerationConfig;

    fn deserialize<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<GenerationConfig, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for GenerationConfigSeed<'_, 'de> {
    type Value = GenerationConfig;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<GenerationConfig, A::Error> {
        let keys = self.0;
        let start = keys.open();
        let mut config = GenerationConfig::default();
        while let Some(key) = map.next_key_seed(KeySeed(keys))? {
            match key {
                Key::GeminiMaxOutputTokens => {
                    config.camel = Some(map.next_value_seed(ShapeSeed::plain(keys))?);
                }
                Key::MaxOutputTokens => {
                    config.snake = Some(map.next_value_seed(ShapeSeed::plain(keys))?);
                }
                _ => map.next_value_seed(Skip(keys))?,
            }
        }
        keys.close(start);
        Ok(config)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<GenerationConfig, A::Error> {
        skip_seq(seq, self.0)?;
        Ok(GenerationConfig::default())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<GenerationConfig, E> {
        Ok(GenerationConfig::default())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<GenerationConfig, E> {
        Ok(GenerationConfig::default())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<GenerationConfig, E> {
        Ok(GenerationConfig::default())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<GenerationConfig, E> {
        Ok(GenerationConfig::default())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<GenerationConfig, E> {
        Ok(GenerationConfig::default())
    }

    fn visit_unit<E: de::Error>(self) -> Result<GenerationConfig, E> {
        Ok(GenerationConfig::default())
    }

    fn visit_none<E: de::Error>(self) -> Result<GenerationConfig, E> {
        Ok(GenerationConfig::default())
    }
}

/// Reads `stream_options`: the shape of its `include_usage` when it is an object that has one,
/// `None` otherwise.
struct StreamOptionsSeed<'k, 'de>(&'k mut Keys<'de>);

impl<'de> DeserializeSeed<'de> for StreamOptionsSeed<'_, 'de> {
    type Value = Option<Shape>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<Shape>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StreamOptionsSeed<'_, 'de> {
    type Value = Option<Shape>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<Shape>, A::Error> {
        let keys = self.0;
        let start = keys.open();
        let mut include_usage = None;
        while let Some(key) = map.next_key_seed(KeySeed(keys))? {
            match key {
                Key::IncludeUsage => {
                    include_usage = Some(map.next_value_seed(ShapeSeed::plain(keys))?);
                }
                _ => map.next_value_seed(Skip(keys))?,
            }
        }
        keys.close(start);
        Ok(include_usage)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Option<Shape>, A::Error> {
        skip_seq(seq, self.0)?;
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
/// documentation for why this is not `IgnoredAny`), but nothing kept and nothing allocated
/// beyond its objects' keys, for the repeated-key check.
struct Skip<'k, 'de>(&'k mut Keys<'de>);

impl<'de> DeserializeSeed<'de> for Skip<'_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Skip<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        skip_seq(seq, self.0)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        skip_map(map, self.0)
    }
}

/// Parses and drops the rest of an array.
fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A, keys: &mut Keys<'de>) -> Result<(), A::Error> {
    while seq.next_element_seed(Skip(keys))?.is_some() {}
    Ok(())
}

/// Parses and drops the rest of an object, its keys checked as any string is and noted for
/// the repeated-key check.
fn skip_map<'de, A: MapAccess<'de>>(mut map: A, keys: &mut Keys<'de>) -> Result<(), A::Error> {
    let start = keys.open();
    while map.next_key_seed(SkipKey(keys))?.is_some() {
        map.next_value_seed(Skip(keys))?;
    }
    keys.close(start);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repeated(body: &str) -> bool {
        RequestFields::from_slice(body.as_bytes()).unwrap().has_repeated_key()
    }

    #[test]
    fn a_repeated_key_is_seen_at_every_depth_and_after_unescaping() {
        for body in [
            r#"{"a": 1, "a": 2}"#,
            r#"{"a": {"b": 1, "b": 1}}"#,
            r#"{"messages": [{"role": "user"}, {"role": "user", "role": "user"}]}"#,
            r#"{"messages": [{"role": "user", "content": [{"t": 1, "t": 2}]}]}"#,
            r#"{"model": [{"a": 1, "a": 1}]}"#,
            r#"{"generationConfig": {"x": {"y": 1, "y": 2}}}"#,
            r#"{"generation_config": {"maxOutputTokens": 1, "max\u005foutput_tokens": 1, "max_output_tokens": 1}}"#,
            r#"[{"a": 1, "a": 2}]"#,
            r#"{"max_tokens": 1, "max\u005ftokens": 1}"#,
            r#"{"\u0061": 1, "a": 1}"#,
        ] {
            assert!(repeated(body), "{body}");
        }
        for body in [
            r#"{"a": 1, "A": 2, "a ": 3}"#,
            r#"{"a": {"a": {"a": 1}}}"#,
            r#"{"x": {"k": 1}, "y": {"k": 1}, "z": [{"k": 1}, {"k": 1}]}"#,
            r#"{"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6, "g": 7, "h": 8, "i": 9}"#,
            "{}",
            "[]",
        ] {
            assert!(!repeated(body), "{body}");
        }
    }

    #[test]
    fn the_gemini_token_field_is_read_under_both_names_of_both_configs() {
        let fields = RequestFields::from_slice(
            br#"{"generationConfig": {"maxOutputTokens": 1, "max_output_tokens": 2}, "generation_config": {"max_output_tokens": 3}}"#,
        )
        .unwrap();
        let config = |camel, snake| Some(GenerationConfig { camel, snake });
        let number = |n| Some(Shape::Number(Some(n)));
        assert_eq!(fields.generation_config, config(number(1), number(2)));
        assert_eq!(fields.generation_config_snake, config(None, number(3)));
        // The top-level `max_output_tokens` (the Responses API's) is a field of its own.
        assert_eq!(fields.max_output_tokens, None);
        let fields = RequestFields::from_slice(br#"{"generation_config": "x"}"#).unwrap();
        assert_eq!(fields.generation_config_snake, config(None, None));
        assert_eq!(fields.generation_config, None);
    }

    #[test]
    fn stream_options_say_whether_the_client_asked_for_usage() {
        let option =
            |body: &str| RequestFields::from_slice(body.as_bytes()).unwrap().usage_option();
        assert_eq!(option(r#"{"stream": true}"#), UsageOption::Missing);
        // Only a top-level `stream_options` counts.
        assert_eq!(
            option(r#"{"x": {"stream_options": {"include_usage": true}}}"#),
            UsageOption::Missing
        );
        assert_eq!(option(r#"{"stream_options": {"include_usage": true}}"#), UsageOption::Asked);
        assert_eq!(
            option(r#"{"stream_options": {"a": [1], "include\u005fusage": true}}"#),
            UsageOption::Asked
        );
        for body in [
            r#"{"stream_options": {"include_usage": false}}"#,
            r#"{"stream_options": {"include_usage": "true"}}"#,
            r#"{"stream_options": {"include_usage": null}}"#,
            r#"{"stream_options": {}}"#,
            r#"{"stream_options": null}"#,
            r#"{"stream_options": [{"include_usage": true}]}"#,
            r#"{"stream_options": "include_usage"}"#,
        ] {
            assert_eq!(option(body), UsageOption::NotAsked, "{body}");
        }
    }

    #[test]
    fn an_escaped_key_equals_the_same_key_unescaped_in_a_small_and_a_large_object() {
        for count in [2, PAIRWISE_KEYS + 4] {
            let names: Vec<String> = (0..count).map(|i| format!("k{i}")).collect();
            let mut keys = Keys::new();
            for name in &names {
                keys.push_borrowed(name);
            }
            keys.close(0);
            assert!(!keys.repeated, "{count} keys");
            for name in &names {
                keys.push_borrowed(name);
            }
            keys.push_escaped("k1");
            keys.close(0);
            assert!(keys.repeated, "{count} keys");
        }
    }

    #[test]
    fn once_a_key_repeats_no_more_keys_are_kept() {
        // A repeated key early in a large body: the rest is parsed (it must still be JSON)
        // but nothing more is pushed, escaped keys included.
        let mut keys = Keys::new();
        let start = keys.open();
        keys.push_borrowed("a");
        keys.push_escaped("a");
        keys.close(start);
        assert!(keys.repeated);
        keys.push_escaped("b");
        keys.push_borrowed("c");
        assert!(keys.stack.is_empty());
        assert_eq!(keys.escaped.len(), 1);
    }
}
