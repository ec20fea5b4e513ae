//! Credentials and their on-disk format.
//!
//! A credential file is one JSON object. Every version starts with the same two fields, so a
//! reader can dispatch before it parses the rest:
//!
//! ```json
//! {"format": "cliproxy-credential", "version": 1, "id": "openai-3f9a…", "provider": "openai",
//!  "type": "api_key", "token": "sk-…", "base_url": null, "label": null, "created_at": 1763769600}
//! ```
//!
//! An `oauth` credential has `"type": "oauth"`, its access token in `token`, and also
//! `refresh_token`, `expires_at` (unix seconds), `token_url` and `client_id`.
//!
//! Version 1 is plaintext (protected by the 0600 file mode only). Version 2 is encrypted:
//!
//! ```json
//! {"format": "cliproxy-credential", "version": 2, "id": "openai-3f9a…",
//!  "key_id": "9c1e…", "nonce": "<base64, 12 bytes>", "ciphertext": "<base64>"}
//! ```
//!
//! where the ciphertext is AES-256-GCM over the whole version 1 document, with the id as
//! associated data: everything that decides where the token is sent (provider, base URL) is
//! authenticated, and a file renamed to another id does not decrypt. Version 1 files written
//! before encryption was enabled stay readable.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use cliproxy_core::Secret;
use ring::rand::{SecureRandom, SystemRandom};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::crypto::{DataKey, from_base64, to_base64};
use crate::oauth::{OAuthTokens, validate_token_url};
use crate::{Error, Result};

/// The `format` marker every credential file carries.
pub(crate) const FORMAT: &str = "cliproxy-credential";
/// Largest credential file read; anything bigger is not a credential.
pub(crate) const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// Longest credential id or provider name.
const MAX_NAME_LEN: usize = 128;

/// The secret part of a credential.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum CredentialSecret {
    /// A static API key, sent as the provider expects (`Authorization: Bearer`, `x-api-key`,
    /// `x-goog-api-key`).
    ApiKey(Secret),
    /// OAuth tokens: the access token is sent like an API key and refreshed before it expires.
    OAuth(OAuthTokens),
}

impl CredentialSecret {
    /// The `type` written to the file and shown by `vault list`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ApiKey(_) => "api_key",
            Self::OAuth(_) => "oauth",
        }
    }

    /// The token sent upstream: the API key, or the current access token.
    pub fn bearer(&self) -> &Secret {
        match self {
            Self::ApiKey(token) => token,
            Self::OAuth(tokens) => &tokens.access_token,
        }
    }
}

/// One provider credential.
#[derive(Clone, Debug)]
pub struct Credential {
    /// Unique id; also the file name (`<id>.json`). Safe to log.
    pub id: String,
    /// The `providers:` entry this credential belongs to.
    pub provider: String,
    /// The token itself.
    pub secret: CredentialSecret,
    /// Overrides the provider's `base_url` for requests made with this credential.
    pub base_url: Option<String>,
    /// Free text for operators.
    pub label: Option<String>,
    /// Unix seconds when it was added.
    pub created_at: u64,
}

/// What `vault list` shows: everything but the secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialMeta {
    /// Credential id.
    pub id: String,
    /// Provider name.
    pub provider: String,
    /// `api_key`, ...
    pub kind: &'static str,
    /// Operator's label.
    pub label: Option<String>,
    /// Base URL override.
    pub base_url: Option<String>,
    /// Unix seconds when it was added.
    pub created_at: u64,
    /// Unix seconds when the gateway last sent it upstream (recorded in batches), if ever.
    pub last_used: Option<u64>,
    /// For OAuth credentials: unix seconds when the access token expires.
    pub expires_at: Option<u64>,
    /// The file it lives in.
    pub path: PathBuf,
    /// How the file is stored: plaintext or encrypted under which key.
    pub stored: Protection,
}

/// How a credential is stored on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Protection {
    /// A version 1 plaintext file.
    Plaintext,
    /// Encrypted under the key with this id.
    Encrypted(String),
}

/// Checks an id or provider name: 1–128 ASCII letters, digits, `-`, `_`, `.`, not starting
/// with `.` (so it is always a plain file name and never a hidden or temporary one).
pub fn validate_name(what: &'static str, value: &str) -> Result<()> {
    let reason = if value.is_empty() || value.len() > MAX_NAME_LEN {
        Some("must be 1 to 128 characters")
    } else if value.starts_with('.') {
        Some("must not start with `.`")
    } else if !value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
        Some("may contain only ASCII letters, digits, `-`, `_` and `.`")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidName {
            what,
            value: value.chars().take(MAX_NAME_LEN).collect(),
            reason,
        }),
        None => Ok(()),
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Credential {
    /// A new API-key credential for `provider` with a fresh random id `<provider>-<16 hex>`.
    pub fn new_api_key(provider: &str, token: Secret) -> Result<Self> {
        validate_name("provider name", provider)?;
        if token.is_empty() {
            return Err(Error::InvalidName {
                what: "token",
                value: String::new(),
                reason: "the token is empty",
            });
        }
        let mut random = [0u8; 8];
        SystemRandom::new().fill(&mut random).map_err(|_| Error::Random)?;
        let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self {
            id: format!("{provider}-{suffix}"),
            provider: provider.to_owned(),
            secret: CredentialSecret::ApiKey(token),
            base_url: None,
            label: None,
            created_at: unix_now(),
        })
    }

    /// A new OAuth credential for `provider` with a fresh random id. The token URL must be
    /// `https://` (or `http://` to a loopback address).
    pub fn new_oauth(provider: &str, tokens: OAuthTokens) -> Result<Self> {
        check_oauth(&tokens).map_err(|reason| Error::InvalidName {
            what: "oauth credential",
            value: String::new(),
            reason,
        })?;
        let mut credential = Self::new_api_key(provider, tokens.access_token.clone())?;
        credential.secret = CredentialSecret::OAuth(tokens);
        Ok(credential)
    }

    /// The same credential under an operator-chosen id.
    pub fn with_id(mut self, id: &str) -> Result<Self> {
        validate_name("credential id", id)?;
        self.id = id.to_owned();
        Ok(self)
    }

    /// `api_key`, ...
    pub fn kind(&self) -> &'static str {
        self.secret.kind()
    }

    /// Everything but the secret.
    pub fn meta(&self, path: PathBuf, stored: Protection) -> CredentialMeta {
        CredentialMeta {
            id: self.id.clone(),
            provider: self.provider.clone(),
            kind: self.kind(),
            label: self.label.clone(),
            base_url: self.base_url.clone(),
            created_at: self.created_at,
            last_used: None,
            expires_at: match &self.secret {
                CredentialSecret::OAuth(tokens) => Some(tokens.expires_at),
                CredentialSecret::ApiKey(_) => None,
            },
            path,
            stored,
        }
    }

    /// The file contents for this credential: encrypted (version 2) under `key`, or plaintext
    /// (version 1) without one. Plaintext buffers are zeroized when dropped.
    pub(crate) fn encode(&self, key: Option<&DataKey>) -> Result<Zeroizing<Vec<u8>>> {
        let plain = self.encode_plain()?;
        let Some(key) = key else { return Ok(plain) };
        let (nonce, ciphertext) = key.seal(&self.id, &plain)?;
        let file = serde_json::json!({
            "format": FORMAT,
            "version": 2,
            "id": self.id,
            "key_id": key.id(),
            "nonce": to_base64(&nonce),
            "ciphertext": to_base64(&ciphertext),
        });
        self.to_file(&file)
    }

    fn encode_plain(&self) -> Result<Zeroizing<Vec<u8>>> {
        #[derive(Serialize)]
        struct V1<'a> {
            format: &'static str,
            version: u64,
            id: &'a str,
            provider: &'a str,
            #[serde(rename = "type")]
            kind: &'static str,
            token: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            refresh_token: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            expires_at: Option<u64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            token_url: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            client_id: Option<&'a str>,
            base_url: Option<&'a str>,
            label: Option<&'a str>,
            created_at: u64,
        }
        let oauth = match &self.secret {
            CredentialSecret::OAuth(tokens) => Some(tokens),
            CredentialSecret::ApiKey(_) => None,
        };
        let file = V1 {
            format: FORMAT,
            version: 1,
            id: &self.id,
            provider: &self.provider,
            kind: self.kind(),
            token: self.secret.bearer().expose(),
            refresh_token: oauth.map(|t| t.refresh_token.expose()),
            expires_at: oauth.map(|t| t.expires_at),
            token_url: oauth.map(|t| t.token_url.as_str()),
            client_id: oauth.map(|t| t.client_id.as_str()),
            base_url: self.base_url.as_deref(),
            label: self.label.as_deref(),
            created_at: self.created_at,
        };
        self.to_file(&file)
    }

    /// One pretty-printed JSON document and a newline, in a buffer zeroized on drop.
    ///
    /// The document is serialized twice: once only to count its bytes, then into a buffer of
    /// exactly that size. A buffer that grew while being written would be copied by the
    /// allocator, and the old block — with the token in it — freed without being zeroized.
    fn to_file(&self, document: &impl Serialize) -> Result<Zeroizing<Vec<u8>>> {
        /// Counts what is written and keeps nothing.
        struct Count(usize);
        impl std::io::Write for Count {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0 += bytes.len();
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let failed = || Error::Invalid {
            path: PathBuf::from(format!("{}.json", self.id)),
            reason: "cannot encode the credential".to_owned(),
        };
        let mut count = Count(0);
        serde_json::to_writer_pretty(&mut count, document).map_err(|_| failed())?;
        let mut out = Zeroizing::new(Vec::with_capacity(count.0 + 1));
        serde_json::to_writer_pretty(&mut *out, document).map_err(|_| failed())?;
        out.push(b'\n');
        if out.len() != count.0 + 1 {
            // The two passes must agree; a document that serializes differently twice (it
            // cannot: it is borrowed, unchanged) is refused rather than written.
            return Err(failed());
        }
        Ok(out)
    }
}

/// The checks an OAuth credential must pass, from a file or from a caller.
fn check_oauth(tokens: &OAuthTokens) -> std::result::Result<(), &'static str> {
    validate_token_url(&tokens.token_url)?;
    if tokens.refresh_token.is_empty() || tokens.access_token.is_empty() {
        return Err("the access and refresh tokens must not be empty");
    }
    if tokens.client_id.is_empty()
        || tokens.client_id.len() > 256
        || tokens.client_id.chars().any(char::is_control)
    {
        return Err("`client_id` must be 1 to 256 characters without control characters");
    }
    Ok(())
}

fn malformed(path: &Path, error: &serde_json::Error) -> Error {
    use serde_json::error::Category;
    let category = match error.classify() {
        Category::Io => "read error",
        Category::Syntax => "syntax error",
        Category::Data => "wrong type, missing or unknown field",
        Category::Eof => "unexpected end of file",
    };
    Error::Malformed { path: path.to_owned(), category, line: error.line(), column: error.column() }
}

/// A decoded credential file: a plaintext credential, or an encrypted one still to be opened
/// with the key it names.
#[derive(Debug)]
pub enum CredentialFile {
    /// Version 1: plaintext.
    Plain(Credential),
    /// Version 2: encrypted.
    Sealed(SealedCredential),
}

/// An encrypted credential as read from its file.
#[derive(Debug)]
pub struct SealedCredential {
    /// Credential id (the associated data).
    pub id: String,
    /// The id of the key it was encrypted with.
    pub key_id: String,
    nonce: [u8; 12],
    ciphertext: Vec<u8>,
}

impl SealedCredential {
    /// Decrypts with `key` and parses the plaintext document inside.
    pub(crate) fn open(&self, path: &Path, key: &DataKey) -> Result<Credential> {
        let plain = key
            .open(&self.id, self.nonce, &self.ciphertext)
            .ok_or_else(|| Error::Decrypt { path: path.to_owned(), key_id: self.key_id.clone() })?;
        match parse_credential_file(path, &self.id, &plain)? {
            CredentialFile::Plain(credential) => Ok(credential),
            CredentialFile::Sealed(_) => Err(Error::Invalid {
                path: path.to_owned(),
                reason: "an encrypted credential must contain a version 1 document".to_owned(),
            }),
        }
    }
}

/// Parses the contents of a credential file. `expected_id` is the file's stem: a file whose
/// `id` differs was renamed or copied by hand and is refused. `path` is only used in errors.
///
/// Hostile input is safe here: the size is capped, unknown fields and versions are errors, and
/// no error repeats the file's contents.
pub fn parse_credential_file(
    path: &Path,
    expected_id: &str,
    bytes: &[u8],
) -> Result<CredentialFile> {
    #[derive(Deserialize)]
    struct Header {
        format: Option<String>,
        version: Option<serde_json::Value>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct V1 {
        #[allow(dead_code, reason = "checked by the header pass")]
        format: IgnoredAny,
        #[allow(dead_code, reason = "checked by the header pass")]
        version: IgnoredAny,
        id: String,
        provider: String,
        #[serde(rename = "type")]
        kind: String,
        token: Secret,
        #[serde(default)]
        refresh_token: Option<Secret>,
        #[serde(default)]
        expires_at: Option<u64>,
        #[serde(default)]
        token_url: Option<String>,
        #[serde(default)]
        client_id: Option<String>,
        #[serde(default)]
        base_url: Option<String>,
        #[serde(default)]
        label: Option<String>,
        created_at: u64,
    }

    let size = bytes.len() as u64;
    if size > MAX_FILE_BYTES {
        return Err(Error::TooLarge { path: path.to_owned(), size, limit: MAX_FILE_BYTES });
    }
    let invalid = |reason: String| Error::Invalid { path: path.to_owned(), reason };
    let header: Header = serde_json::from_slice(bytes).map_err(|e| malformed(path, &e))?;
    if header.format.as_deref() != Some(FORMAT) {
        return Err(invalid(format!(
            "not a cliproxy credential file (the `format` field must be \"{FORMAT}\")"
        )));
    }
    let version = match header.version {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        _ => None,
    }
    .ok_or_else(|| {
        invalid("the `version` field is missing or not a positive integer".to_owned())
    })?;
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct V2 {
        #[allow(dead_code, reason = "checked by the header pass")]
        format: IgnoredAny,
        #[allow(dead_code, reason = "checked by the header pass")]
        version: IgnoredAny,
        id: String,
        key_id: String,
        nonce: String,
        ciphertext: String,
    }

    let id_mismatch = |id: &str| {
        invalid(format!(
            "the file says its id is `{}` but is named `{expected_id}.json`; ids and file names must match",
            id.chars().take(MAX_NAME_LEN).collect::<String>()
        ))
    };
    let file: V1 = match version {
        1 => serde_json::from_slice(bytes).map_err(|e| malformed(path, &e))?,
        2 => {
            let file: V2 = serde_json::from_slice(bytes).map_err(|e| malformed(path, &e))?;
            if file.id != expected_id {
                return Err(id_mismatch(&file.id));
            }
            if file.key_id.len() != 16 || !file.key_id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid("`key_id` must be 16 hex digits".to_owned()));
            }
            let nonce = from_base64(&file.nonce)
                .and_then(|n| <[u8; 12]>::try_from(n).ok())
                .ok_or_else(|| invalid("`nonce` must be 12 bytes in base64".to_owned()))?;
            let ciphertext = from_base64(&file.ciphertext)
                .filter(|c| c.len() >= 16)
                .ok_or_else(|| invalid("`ciphertext` is not base64 or is too short".to_owned()))?;
            return Ok(CredentialFile::Sealed(SealedCredential {
                id: file.id,
                key_id: file.key_id,
                nonce,
                ciphertext,
            }));
        }
        other => return Err(Error::UnsupportedVersion { path: path.to_owned(), version: other }),
    };
    if file.id != expected_id {
        return Err(id_mismatch(&file.id));
    }
    validate_name("provider name", &file.provider).map_err(|e| invalid(e.to_string()))?;
    if file.token.is_empty() {
        return Err(invalid("the `token` is empty".to_owned()));
    }
    let secret = match (
        file.kind.as_str(),
        file.refresh_token,
        file.expires_at,
        file.token_url,
        file.client_id,
    ) {
        ("api_key", None, None, None, None) => CredentialSecret::ApiKey(file.token),
        ("api_key", ..) => {
            return Err(invalid(
                "an api_key credential has no refresh_token, expires_at, token_url or client_id"
                    .to_owned(),
            ));
        }
        ("oauth", Some(refresh_token), Some(expires_at), Some(token_url), Some(client_id)) => {
            let tokens = OAuthTokens {
                access_token: file.token,
                refresh_token,
                expires_at,
                token_url,
                client_id,
            };
            check_oauth(&tokens).map_err(|reason| invalid(reason.to_owned()))?;
            CredentialSecret::OAuth(tokens)
        }
        ("oauth", ..) => {
            return Err(invalid(
                "an oauth credential needs refresh_token, expires_at, token_url and client_id"
                    .to_owned(),
            ));
        }
        _ => {
            return Err(invalid(
                "unknown credential `type` (supported: api_key, oauth)".to_owned(),
            ));
        }
    };
    Ok(CredentialFile::Plain(Credential {
        id: file.id,
        provider: file.provider,
        secret,
        base_url: file.base_url,
        label: file.label,
        created_at: file.created_at,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLANTED: &str = "sk-planted-provider-token-77aa31";

    fn sample() -> Credential {
        Credential::new_api_key("openai", Secret::from(PLANTED.to_owned()))
            .unwrap()
            .with_id("openai-main")
            .unwrap()
    }

    fn parse(bytes: &[u8]) -> Result<Credential> {
        match parse_credential_file(Path::new("/vault/openai-main.json"), "openai-main", bytes)? {
            CredentialFile::Plain(credential) => Ok(credential),
            CredentialFile::Sealed(sealed) => {
                sealed.open(Path::new("/vault/openai-main.json"), &key())
            }
        }
    }

    fn key() -> DataKey {
        DataKey::parse(
            crate::KeyRole::Current,
            &Secret::from("q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=".to_owned()),
        )
        .unwrap()
    }

    /// Issue 18 item 19: the file contents (plaintext JSON, with the token in it) are written
    /// into a buffer allocated once at its final size, so no grown-out-of block holding a
    /// copy of the token is freed without being zeroized. A 3000-byte token outgrows any
    /// fixed first guess.
    #[test]
    fn encoding_never_grows_a_buffer_that_holds_the_token() {
        let long = "t".repeat(3000);
        for token in [PLANTED, long.as_str()] {
            let credential = Credential::new_api_key("openai", Secret::from(token.to_owned()))
                .unwrap()
                .with_id("openai-main")
                .unwrap();
            for key in [None, Some(key())] {
                let bytes = credential.encode(key.as_ref()).unwrap();
                assert_eq!(bytes.capacity(), bytes.len(), "token of {}", token.len());
                assert_eq!(parse(&bytes).unwrap().secret.bearer().expose(), token);
            }
        }
    }

    #[test]
    fn new_ids_are_random_and_well_formed() {
        let a = Credential::new_api_key("openai", Secret::from(PLANTED.to_owned())).unwrap();
        let b = Credential::new_api_key("openai", Secret::from(PLANTED.to_owned())).unwrap();
        assert_ne!(a.id, b.id);
        assert!(a.id.starts_with("openai-") && a.id.len() == "openai-".len() + 16, "{}", a.id);
        assert!(a.created_at > 1_700_000_000);
        assert_eq!(a.kind(), "api_key");
    }

    #[test]
    fn encode_then_parse_round_trips() {
        let mut credential = sample();
        credential.base_url = Some("http://127.0.0.1:8000/v1".to_owned());
        credential.label = Some("team a".to_owned());
        let bytes = credential.encode(None).unwrap();
        let back = parse(&bytes).unwrap();
        assert_eq!(back.id, "openai-main");
        assert_eq!(back.provider, "openai");
        assert_eq!(back.base_url, credential.base_url);
        assert_eq!(back.label, credential.label);
        assert_eq!(back.created_at, credential.created_at);
        assert_eq!(back.secret.bearer().expose(), PLANTED);
        assert_eq!(back.kind(), "api_key");
    }

    #[test]
    fn debug_of_a_credential_hides_the_token() {
        let printed = format!(
            "{:?} {:#?}",
            sample(),
            sample().meta(PathBuf::from("/x"), Protection::Plaintext)
        );
        assert!(!printed.contains(PLANTED), "{printed}");
        assert!(printed.contains("openai-main"));
    }

    #[test]
    fn names_are_validated() {
        for bad in ["", ".hidden", "a/b", "../x", "a b", "é", &"x".repeat(129)] {
            assert!(validate_name("credential id", bad).is_err(), "{bad:?}");
            assert!(sample().with_id(bad).is_err());
        }
        for good in ["a", "openai-01", "claude_team.b", &"x".repeat(128)] {
            validate_name("credential id", good).unwrap();
        }
        assert!(Credential::new_api_key("open/ai", Secret::from(PLANTED.to_owned())).is_err());
        assert!(Credential::new_api_key("openai", Secret::from(String::new())).is_err());
    }

    /// Malformed and hostile files: each is an error that names the file and never repeats
    /// the token, even when the token sits right where the problem is.
    #[test]
    fn hostile_files_are_rejected_without_echoing_contents() {
        let good = String::from_utf8(sample().encode(None).unwrap().to_vec()).unwrap();
        let cases: Vec<(String, &str)> = vec![
            (String::new(), "unexpected end of file"),
            ("{".to_owned(), "unexpected end of file"),
            ("not json".to_owned(), "syntax error"),
            (good.replace("\"version\": 1", "\"version\": 3"), "format version 3 is not supported"),
            (good.replace("\"version\": 1", "\"version\": -1"), "`version` field"),
            (good.replace("\"version\": 1", "\"version\": \"1\""), "`version` field"),
            (good.replace("cliproxy-credential", "something-else"), "not a cliproxy credential"),
            (good.replace("\"openai-main\"", "\"other\""), "ids and file names must match"),
            (good.replace("\"api_key\"", "\"jwt\""), "unknown credential `type`"),
            (good.replace("\"api_key\"", "\"oauth\""), "an oauth credential needs refresh_token"),
            (
                good.replace("\"label\"", "\"expires_at\": 5, \"label\""),
                "an api_key credential has no refresh_token",
            ),
            (good.replace(PLANTED, ""), "the `token` is empty"),
            (
                good.replace("\"label\"", &format!("\"{PLANTED}\": 1, \"label\"")),
                "wrong type, missing or unknown field",
            ),
            (
                good.replace(&format!("\"{PLANTED}\""), &format!("[\"{PLANTED}\"]")),
                "wrong type, missing or unknown field",
            ),
            (good.replace("\"created_at\"", "\"created\""), "wrong type, missing or unknown field"),
            (good.replace("\"openai\"", "\"../etc\""), "provider name"),
            (format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)), "wrong type"),
            ("\u{0}\u{0}\u{0}".to_owned(), "syntax error"),
            (format!("{{\"token\": \"{PLANTED}\"}}"), "not a cliproxy credential"),
        ];
        for (contents, expected) in cases {
            let error = parse(contents.as_bytes()).unwrap_err().to_string();
            assert!(error.contains(expected), "expected {expected:?}, got {error}");
            assert!(error.contains("/vault/openai-main.json"), "{error}");
            assert!(!error.contains(PLANTED), "{error}");
        }
        let invalid_utf8 = [b"{\"format\": \"".as_slice(), &[0xff, 0xfe], b"\"}"].concat();
        let error = parse(&invalid_utf8).unwrap_err().to_string();
        assert!(error.contains("syntax error") || error.contains("not a cliproxy"), "{error}");
    }

    #[test]
    fn encrypted_files_round_trip_and_hide_the_token() {
        let mut credential = sample();
        credential.base_url = Some("https://api.example/v1".to_owned());
        let bytes = credential.encode(Some(&key())).unwrap();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        assert!(text.contains("\"version\": 2") && text.contains(key().id()), "{text}");
        for hidden in [PLANTED, "api.example", "api_key", "openai\""] {
            assert!(!text.contains(hidden), "{hidden} in {text}");
        }
        let back = parse(&bytes).unwrap();
        assert_eq!(back.base_url, credential.base_url);
        assert_eq!(back.secret.bearer().expose(), PLANTED);
        assert_eq!(back.kind(), "api_key");
    }

    #[test]
    fn tampered_encrypted_files_are_errors_naming_the_file() {
        let good = String::from_utf8(sample().encode(Some(&key())).unwrap().to_vec()).unwrap();
        let value: serde_json::Value = serde_json::from_str(&good).unwrap();
        let ciphertext = value["ciphertext"].as_str().unwrap();
        let nonce = value["nonce"].as_str().unwrap();
        let mut flipped = from_base64(ciphertext).unwrap();
        flipped[3] ^= 0x40;
        let cases: Vec<(String, &str)> = vec![
            (good.replace(ciphertext, &to_base64(&flipped)), "cannot decrypt with key"),
            (good.replace(ciphertext, &ciphertext[..ciphertext.len() - 8]), "cannot decrypt"),
            (good.replace(nonce, "AAAAAAAAAAAAAAAA"), "cannot decrypt"),
            (good.replace(nonce, "AAAA"), "`nonce` must be 12 bytes"),
            (good.replace(ciphertext, "!!"), "`ciphertext` is not base64"),
            (good.replace("\"key_id\": \"", "\"key_id\": \"zz"), "`key_id` must be 16 hex"),
            (good.replace("\"openai-main\"", "\"openai-other\""), "ids and file names must match"),
            (good.replace("\"ciphertext\"", "\"extra\": 1, \"ciphertext\""), "unknown field"),
            (good[..good.len() / 2].to_owned(), "unexpected end of file"),
        ];
        for (contents, expected) in cases {
            let error = parse(contents.as_bytes()).unwrap_err().to_string();
            assert!(error.contains(expected), "expected {expected:?}, got {error}");
            assert!(error.contains("/vault/openai-main.json"), "{error}");
        }
    }

    fn oauth_sample(token_url: &str) -> Credential {
        Credential::new_oauth(
            "claude",
            crate::OAuthTokens {
                access_token: Secret::from("at-planted-access-0001".to_owned()),
                refresh_token: Secret::from(PLANTED.to_owned()),
                expires_at: 1_900_000_000,
                token_url: token_url.to_owned(),
                client_id: "client-1".to_owned(),
            },
        )
        .unwrap()
        .with_id("openai-main")
        .unwrap()
    }

    #[test]
    fn oauth_credentials_round_trip_plain_and_encrypted() {
        let credential = oauth_sample("https://auth.example/oauth/token");
        for key in [None, Some(key())] {
            let bytes = credential.encode(key.as_ref()).unwrap();
            if key.is_some() {
                let text = String::from_utf8(bytes.to_vec()).unwrap();
                assert!(!text.contains(PLANTED) && !text.contains("at-planted"), "{text}");
            }
            let back = parse(&bytes).unwrap();
            assert_eq!(back.kind(), "oauth");
            let CredentialSecret::OAuth(tokens) = &back.secret else { unreachable!() };
            assert_eq!(tokens.access_token.expose(), "at-planted-access-0001");
            assert_eq!(tokens.refresh_token.expose(), PLANTED);
            assert_eq!(tokens.expires_at, 1_900_000_000);
            assert_eq!(tokens.token_url, "https://auth.example/oauth/token");
            assert_eq!(tokens.client_id, "client-1");
            let meta = back.meta(PathBuf::from("/x"), Protection::Plaintext);
            assert_eq!(meta.expires_at, Some(1_900_000_000));
            assert!(!format!("{back:?} {meta:?}").contains(PLANTED));
        }
    }

    #[test]
    fn oauth_files_with_bad_fields_are_refused() {
        let good = String::from_utf8(
            oauth_sample("https://auth.example/t").encode(None).unwrap().to_vec(),
        )
        .unwrap();
        let cases = [
            (good.replace("https://auth.example/t", "http://evil.example/t"), "token_url"),
            (good.replace("\"client-1\"", "\"\""), "client_id"),
            (good.replace(PLANTED, ""), "must not be empty"),
            (good.replace("1900000000", "\"soon\""), "wrong type"),
        ];
        for (contents, expected) in cases {
            let error = parse(contents.as_bytes()).unwrap_err().to_string();
            assert!(error.contains(expected), "expected {expected:?}, got {error}");
            assert!(!error.contains(PLANTED), "{error}");
        }
        let bad = crate::OAuthTokens {
            access_token: Secret::from("a".to_owned()),
            refresh_token: Secret::from("r".to_owned()),
            expires_at: 0,
            token_url: "http://10.1.1.1/t".to_owned(),
            client_id: "c".to_owned(),
        };
        assert!(Credential::new_oauth("claude", bad).is_err());
    }

    #[test]
    fn oversized_files_are_refused_before_parsing() {
        let huge = vec![b' '; usize::try_from(MAX_FILE_BYTES).unwrap() + 1];
        let error = parse(&huge).unwrap_err().to_string();
        assert!(error.contains("larger than the 1048576-byte limit"), "{error}");
    }
}
