//! What the two OpenAI formats (Chat Completions and Responses) share: the error body, the
//! reasoning effort names, `data:` URLs, and the locator that turns a body that does not fit
//! its typed form into an error naming the field.

use crate::error::json_problem;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::ir::{ApiError, Effort, ErrorKind, Image, Reasoning, Usage};

/// How many bytes of a provider's error body that is not an OpenAI error object are kept as
/// its message: enough to read, not enough to carry a whole reply into a log line.
const MAX_ERROR_TEXT: usize = 300;

/// The fields of an object the locator tries one by one. A hostile body with thousands of
/// fields would otherwise cost one copy of the object per field.
const MAX_LOCATE_FIELDS: usize = 48;

/// Reads a whole body as `T` (the fast, typed path). When the body is JSON but does not fit,
/// `locate` reads it again as plain JSON and names the field that is wrong; that second read
/// happens only on the error path, so a valid request never pays for it.
pub(in crate::formats) fn parse<'de, T: Deserialize<'de>>(
    body: &'de [u8],
    locate: fn(&Value) -> Option<(String, String)>,
) -> Result<T> {
    match serde_json::from_slice(body) {
        Ok(value) => Ok(value),
        Err(error) if error.is_data() => {
            let located =
                serde_json::from_slice::<Value>(body).ok().and_then(|value| locate(&value));
            Err(match located {
                Some((field, problem)) => Error::invalid(field, problem),
                None => Error::invalid("body", json_problem(&error)),
            })
        }
        Err(error) => Err(Error::invalid("body", json_problem(&error))),
    }
}

/// Why `value` does not fit `T`, and where: the first field whose removal makes it fit, or
/// else the first whose removal changes the complaint (a required field of the wrong type),
/// or else the object itself (a required field is missing). `None` when it fits.
pub(in crate::formats) fn culprit<T: DeserializeOwned>(
    value: &Value,
    path: &str,
) -> Option<(String, String)> {
    let complaint = T::deserialize(value).err()?.to_string();
    // A missing field is the object's fault; removing another field would only change the
    // complaint to that one.
    let Some(object) = value.as_object().filter(|_| !complaint.starts_with("missing field")) else {
        return Some((whole(path), complaint));
    };
    let mut changed = None;
    for key in object.keys().take(MAX_LOCATE_FIELDS) {
        let mut without = object.clone();
        without.remove(key);
        match T::deserialize(&Value::Object(without)) {
            Ok(_) => return Some((join(path, key), complaint)),
            Err(other) if changed.is_none() && other.to_string() != complaint => {
                changed = Some(key);
            }
            Err(_) => {}
        }
    }
    Some(match changed {
        Some(key) => (join(path, key), complaint),
        None => (whole(path), complaint),
    })
}

/// The first element of the array at `object[key]` that `check` finds wrong.
pub(in crate::formats) fn locate_in_array(
    object: &serde_json::Map<String, Value>,
    path: &str,
    key: &str,
    check: impl Fn(&Value, &str) -> Option<(String, String)>,
) -> Option<(String, String)> {
    let items = object.get(key)?.as_array()?;
    items.iter().enumerate().find_map(|(i, item)| check(item, &format!("{}[{i}]", join(path, key))))
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") }
}

fn whole(path: &str) -> String {
    if path.is_empty() { "body".to_owned() } else { path.to_owned() }
}

/// A content that is either text or an array of parts, read without the buffering an
/// untagged enum costs (every message has one: this is the hot path of a request).
pub(in crate::formats) enum TextOrParts<T> {
    /// A plain string.
    Text(String),
    /// The parts.
    Parts(Vec<T>),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for TextOrParts<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<T>(std::marker::PhantomData<T>);

        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Visit<T> {
            type Value = TextOrParts<T>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or an array of content parts")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
                Ok(TextOrParts::Text(text.to_owned()))
            }

            fn visit_string<E: serde::de::Error>(self, text: String) -> Result<Self::Value, E> {
                Ok(TextOrParts::Text(text))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                // The hint comes from the input: it sizes the first allocation only up to a
                // few parts.
                let mut parts = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(16));
                while let Some(part) = seq.next_element()? {
                    parts.push(part);
                }
                Ok(TextOrParts::Parts(parts))
            }
        }

        deserializer.deserialize_any(Visit(std::marker::PhantomData))
    }
}

/// A `data:` URL with base64 content becomes inline bytes; any other address stays one.
pub(in crate::formats) fn image_from_url(url: String) -> Image {
    if let Some(rest) = url.strip_prefix("data:")
        && let Some((meta, data)) = rest.split_once(',')
        && let Some(media_type) = meta.strip_suffix(";base64")
    {
        return Image::Base64 { media_type: media_type.to_owned(), data: data.to_owned() };
    }
    Image::Url { url, media_type: None }
}

/// The address OpenAI takes for an image: inline bytes as a `data:` URL.
pub(in crate::formats) fn image_to_url(image: &Image) -> std::borrow::Cow<'_, str> {
    match image {
        Image::Base64 { media_type, data } => format!("data:{media_type};base64,{data}").into(),
        Image::Url { url, .. } => url.as_str().into(),
    }
}

/// OpenAI's reasoning effort names. `none` turns reasoning off; `xhigh` (the newest models'
/// top level) is read as `high`, the highest level the other formats can say.
pub(in crate::formats) fn parse_effort(name: &str, field: &str) -> Result<Reasoning> {
    Ok(match name {
        "none" => Reasoning::Off,
        "minimal" => Reasoning::Effort(Effort::Minimal),
        "low" => Reasoning::Effort(Effort::Low),
        "medium" => Reasoning::Effort(Effort::Medium),
        "high" | "xhigh" => Reasoning::Effort(Effort::High),
        other => return Err(Error::invalid(field, format!("unknown reasoning effort `{other}`"))),
    })
}

/// The effort sent to OpenAI. Reasoning turned off sends none at all: the models without
/// reasoning (gpt-4o, gpt-4.1) refuse the field, and the reasoning models read its absence as
/// their default.
pub(in crate::formats) fn effort_name(reasoning: Option<Reasoning>) -> Option<&'static str> {
    match reasoning? {
        Reasoning::Off => None,
        Reasoning::Effort(effort) => Some(effort.as_str()),
        Reasoning::Budget(budget) => Some(Effort::from_budget(budget).as_str()),
    }
}

/// OpenAI's error body: `{"error":{"message","type","param","code"}}`.
#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorObject<'a>,
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    param: Option<&'a str>,
    code: Option<&'static str>,
}

/// OpenAI's `type` and `code` for a kind of error.
pub(in crate::formats) const fn error_type(
    kind: ErrorKind,
) -> (&'static str, Option<&'static str>) {
    match kind {
        ErrorKind::InvalidRequest => ("invalid_request_error", None),
        ErrorKind::Authentication => ("authentication_error", Some("invalid_api_key")),
        ErrorKind::Permission => ("permission_error", None),
        ErrorKind::NotFound => ("not_found_error", Some("model_not_found")),
        ErrorKind::RequestTooLarge => ("invalid_request_error", Some("request_too_large")),
        ErrorKind::RateLimit => ("rate_limit_error", Some("rate_limit_exceeded")),
        ErrorKind::Api => ("server_error", None),
        ErrorKind::Overloaded => ("server_error", Some("overloaded")),
    }
}

/// The status an OpenAI error `type` (or `code`) stands for, for errors that arrive without
/// one (in the middle of a stream, whose status was 200).
pub(in crate::formats) fn status_of_type(kind: &str) -> u16 {
    match kind {
        "invalid_request_error" | "invalid_prompt" | "context_length_exceeded" => 400,
        "authentication_error" | "invalid_api_key" => 401,
        "permission_error" => 403,
        "not_found_error" | "model_not_found" => 404,
        "rate_limit_error"
        | "rate_limit_exceeded"
        | "insufficient_quota"
        | "tokens"
        | "requests" => 429,
        "overloaded" | "overloaded_error" | "service_unavailable" => 503,
        _ => 500,
    }
}

/// Writes an OpenAI error body.
pub(in crate::formats) fn encode_error(error: &ApiError) -> Vec<u8> {
    let (kind, code) = error_type(error.kind);
    let body =
        ErrorBody { error: ErrorObject { message: &error.message, kind, param: None, code } };
    serde_json::to_vec(&body).unwrap_or_default()
}

/// An OpenAI error object as providers send it; every field may be missing or null, and
/// `code` is a string or a number depending on the server.
#[derive(Deserialize, Default)]
pub(in crate::formats) struct WireError {
    #[serde(default)]
    pub(in crate::formats) message: Option<String>,
    #[serde(default, rename = "type")]
    pub(in crate::formats) kind: Option<String>,
    #[serde(default)]
    pub(in crate::formats) code: Option<Value>,
}

impl WireError {
    /// The common form of this error, `status` being the HTTP status it came with (`None`
    /// inside a stream: the type says it then).
    pub(in crate::formats) fn into_api_error(self, status: Option<u16>) -> ApiError {
        let status = status.unwrap_or_else(|| {
            let code = self.code.as_ref().and_then(Value::as_str);
            match self.kind.as_deref().map(status_of_type) {
                Some(500) | None => code.map_or(500, status_of_type),
                Some(status) => status,
            }
        });
        ApiError {
            status,
            kind: ErrorKind::from_status(status),
            message: self.message.unwrap_or_else(|| "upstream error".to_owned()),
        }
    }
}

#[derive(Deserialize)]
struct WireErrorBody {
    error: ErrorField,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ErrorField {
    Object(WireError),
    Text(String),
}

/// Reads an OpenAI error answer; any other body keeps its first bytes as the message.
pub(in crate::formats) fn decode_error(status: u16, body: &[u8]) -> ApiError {
    match serde_json::from_slice::<WireErrorBody>(body) {
        Ok(WireErrorBody { error: ErrorField::Object(error) }) => {
            error.into_api_error(Some(status))
        }
        Ok(WireErrorBody { error: ErrorField::Text(message) }) => {
            ApiError { status, kind: ErrorKind::from_status(status), message }
        }
        Err(_) => {
            ApiError { status, kind: ErrorKind::from_status(status), message: cut_text(body) }
        }
    }
}

/// The first bytes of a body as text, cut at a character boundary.
pub(in crate::formats) fn cut_text(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut end = text.len().min(MAX_ERROR_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default().trim().to_owned()
}

/// The usage a client is given at the end of a stream: the finish's figures, completed by
/// those known at the start (Anthropic reports the prompt in `message_start` only).
pub(in crate::formats) fn merge_usage(start: Usage, finish: Usage) -> Usage {
    let pick = |start: u64, finish: u64| if finish == 0 { start } else { finish };
    Usage {
        input_tokens: pick(start.input_tokens, finish.input_tokens),
        output_tokens: pick(start.output_tokens, finish.output_tokens),
        cache_read_tokens: pick(start.cache_read_tokens, finish.cache_read_tokens),
        cache_write_tokens: pick(start.cache_write_tokens, finish.cache_write_tokens),
        reasoning_tokens: pick(start.reasoning_tokens, finish.reasoning_tokens),
    }
}

/// Seconds since the Unix epoch, for the `created` fields OpenAI's replies carry.
pub(in crate::formats) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Appends one SSE frame, with an event name when the format uses them.
pub(in crate::formats) fn write_frame<T: Serialize>(
    out: &mut Vec<u8>,
    event: Option<&str>,
    data: &T,
) {
    if let Some(event) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(event.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    let start = out.len();
    if serde_json::to_writer(&mut *out, data).is_err() {
        // Serialising these frames cannot fail (no maps with non-string keys, no I/O); if it
        // ever did, the partial frame is taken back rather than sent broken.
        out.truncate(start);
        out.extend_from_slice(b"{}");
    }
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_urls_become_inline_images_and_addresses_stay() {
        assert_eq!(
            image_from_url("data:image/png;base64,iVBORw0=".to_owned()),
            Image::Base64 { media_type: "image/png".into(), data: "iVBORw0=".into() }
        );
        assert_eq!(
            image_from_url("https://x.test/a.png".to_owned()),
            Image::Url { url: "https://x.test/a.png".into(), media_type: None }
        );
        // A data: URL that is not base64 cannot be inline bytes: it stays an address.
        assert!(matches!(image_from_url("data:text/plain,hi".to_owned()), Image::Url { .. }));
        let image = Image::Base64 { media_type: "image/jpeg".into(), data: "AAA=".into() };
        assert_eq!(image_to_url(&image), "data:image/jpeg;base64,AAA=");
    }

    #[test]
    fn error_text_is_cut_at_a_character_boundary() {
        let body = "é".repeat(400);
        let text = cut_text(body.as_bytes());
        assert!(text.len() <= MAX_ERROR_TEXT && text.chars().all(|c| c == 'é'));
        assert_eq!(cut_text(b"\xff\xfe oops"), "\u{fffd}\u{fffd} oops");
    }

    #[test]
    fn errors_inside_a_stream_take_their_status_from_the_type() {
        let error = WireError {
            message: Some("slow down".into()),
            kind: Some("rate_limit_error".into()),
            code: None,
        };
        assert_eq!(error.into_api_error(None).status, 429);
        let error =
            WireError { message: None, kind: None, code: Some("insufficient_quota".into()) };
        let error = error.into_api_error(None);
        assert_eq!((error.status, error.kind), (429, ErrorKind::RateLimit));
    }
}
