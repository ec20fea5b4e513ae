//! minisign's signature file, legacy (`Ed`) form:
//!
//! ```text
//! untrusted comment: <anything, not signed>
//! base64("Ed" || key id (8 bytes) || Ed25519(file) (64 bytes))
//! trusted comment: <one line, signed>
//! base64(Ed25519(Ed25519(file) || trusted comment) (64 bytes))
//! ```

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::keys::{ALG_ED25519, KeyId, PublicKey, SecretKey, check_algorithm, split_lines};
use super::{Error, Result};

const UNTRUSTED_PREFIX: &str = "untrusted comment: ";
const TRUSTED_PREFIX: &str = "trusted comment: ";
/// minisign reads the untrusted comment line with `fgets` into 1024 bytes: the line, its
/// newline and the terminating NUL must fit.
const MAX_UNTRUSTED_LINE: usize = 1024 - 2;
/// The same for the trusted comment line, into 8192 bytes.
const MAX_TRUSTED_LINE: usize = 8192 - 2;
/// What we sign is kept well inside minisign's limit.
const MAX_TRUSTED_COMMENT: usize = 1024;
/// No valid signature file is longer: the two comment lines at their maximum, two base64
/// lines, four newlines.
pub(super) const MAX_SIGNATURE_FILE: u64 = 10 * 1024;
/// `"Ed" || key id || signature`.
const SIGNATURE_BYTES: usize = 2 + 8 + 64;

/// A minisign signature (legacy `Ed` form) of one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    untrusted_comment: String,
    key_id: KeyId,
    signature: [u8; 64],
    trusted_comment: String,
    global_signature: [u8; 64],
}

impl Signature {
    /// Reads a `.minisig` file. Only the legacy `Ed` form is accepted: a prehashed `ED`
    /// signature is refused with [`Error::UnsupportedAlgorithm`].
    pub fn parse(text: &str) -> Result<Self> {
        let malformed = |reason: String| Error::MalformedSignature(reason);
        if text.len() as u64 > MAX_SIGNATURE_FILE {
            return Err(malformed("longer than any minisign signature file".to_owned()));
        }
        let lines = split_lines(text);
        let [untrusted, signature, trusted, global] = lines.as_slice() else {
            return Err(malformed(format!(
                "expected 4 lines (untrusted comment, signature, trusted comment, comment signature), found {}",
                lines.len()
            )));
        };
        let Some(untrusted_comment) = untrusted.strip_prefix(UNTRUSTED_PREFIX) else {
            return Err(malformed(format!("line 1 does not start with {UNTRUSTED_PREFIX:?}")));
        };
        if untrusted.len() > MAX_UNTRUSTED_LINE {
            return Err(malformed(format!(
                "line 1 is longer than minisign's {MAX_UNTRUSTED_LINE} bytes"
            )));
        }
        let bytes = BASE64
            .decode(signature)
            .map_err(|_| malformed("line 2 (the signature) is not valid base64".to_owned()))?;
        if bytes.len() != SIGNATURE_BYTES {
            return Err(malformed(format!(
                "line 2 decodes to {} bytes; a minisign signature has {SIGNATURE_BYTES}",
                bytes.len()
            )));
        }
        check_algorithm("signature", [bytes[0], bytes[1]])?;
        let Some(trusted_comment) = trusted.strip_prefix(TRUSTED_PREFIX) else {
            return Err(malformed(format!("line 3 does not start with {TRUSTED_PREFIX:?}")));
        };
        if trusted.len() > MAX_TRUSTED_LINE {
            return Err(malformed(format!(
                "line 3 is longer than minisign's {MAX_TRUSTED_LINE} bytes"
            )));
        }
        let global_bytes = BASE64.decode(global).map_err(|_| {
            malformed("line 4 (the trusted comment's signature) is not valid base64".to_owned())
        })?;
        let global_signature: [u8; 64] = global_bytes.as_slice().try_into().map_err(|_| {
            malformed(format!(
                "line 4 decodes to {} bytes; an Ed25519 signature has 64",
                global_bytes.len()
            ))
        })?;
        let mut key_id = [0; 8];
        key_id.copy_from_slice(&bytes[2..10]);
        let mut signature = [0; 64];
        signature.copy_from_slice(&bytes[10..]);
        Ok(Self {
            untrusted_comment: untrusted_comment.to_owned(),
            key_id: KeyId::from_bytes(key_id),
            signature,
            trusted_comment: trusted_comment.to_owned(),
            global_signature,
        })
    }

    /// The `.minisig` file.
    pub fn to_text(&self) -> String {
        let mut bytes = Vec::with_capacity(SIGNATURE_BYTES);
        bytes.extend_from_slice(&ALG_ED25519);
        bytes.extend_from_slice(self.key_id.as_bytes());
        bytes.extend_from_slice(&self.signature);
        format!(
            "{UNTRUSTED_PREFIX}{}\n{}\n{TRUSTED_PREFIX}{}\n{}\n",
            self.untrusted_comment,
            BASE64.encode(bytes),
            self.trusted_comment,
            BASE64.encode(self.global_signature)
        )
    }

    /// The id of the key that made the signature.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The trusted comment. It is only trustworthy after [`Signature::verify`] succeeded.
    pub fn trusted_comment(&self) -> &str {
        &self.trusted_comment
    }

    /// The untrusted comment: anyone can change it without breaking the signature.
    pub fn untrusted_comment(&self) -> &str {
        &self.untrusted_comment
    }

    /// Checks, in minisign's order, that the signature was made by `public_key`'s key id,
    /// that it signs `message`, and that the trusted comment was signed with it.
    pub fn verify(&self, public_key: &PublicKey, message: &[u8]) -> Result<()> {
        if self.key_id != public_key.key_id() {
            return Err(Error::KeyIdMismatch {
                signature: self.key_id,
                public_key: public_key.key_id(),
            });
        }
        if !public_key.verifies(message, &self.signature) {
            return Err(Error::BadSignature);
        }
        if !public_key.verifies(&self.global_message(), &self.global_signature) {
            return Err(Error::BadTrustedComment);
        }
        Ok(())
    }

    /// Signs `message` with `sign` (an Ed25519 signer) and the trusted comment with it.
    pub(super) fn create(
        sign: impl Fn(&[u8]) -> [u8; 64],
        key_id: KeyId,
        message: &[u8],
        trusted_comment: &str,
    ) -> Result<Self> {
        check_comment(trusted_comment)?;
        let mut signature = Self {
            untrusted_comment: format!("signature from cliproxy release key {key_id}"),
            key_id,
            signature: sign(message),
            trusted_comment: trusted_comment.to_owned(),
            global_signature: [0; 64],
        };
        signature.global_signature = sign(&signature.global_message());
        Ok(signature)
    }

    /// What the global signature signs: the file's signature, then the trusted comment.
    fn global_message(&self) -> Vec<u8> {
        let mut message = Vec::with_capacity(64 + self.trusted_comment.len());
        message.extend_from_slice(&self.signature);
        message.extend_from_slice(self.trusted_comment.as_bytes());
        message
    }
}

impl SecretKey {
    /// Signs `message` in minisign's legacy `Ed` format with `trusted_comment`, a single line
    /// that is signed too (minisign prints it after verifying).
    pub fn sign(&self, message: &[u8], trusted_comment: &str) -> Result<Signature> {
        Signature::create(
            |bytes| self.sign_raw(bytes),
            self.public_key().key_id(),
            message,
            trusted_comment,
        )
    }
}

/// A trusted comment must be one line that minisign reads back unchanged: no newline (the
/// line would end early), no NUL (C strings stop there), no other control character but tab
/// (minisign's own comments use tabs), and no trailing whitespace (minisign trims the line).
fn check_comment(comment: &str) -> Result<()> {
    if comment.len() > MAX_TRUSTED_COMMENT {
        return Err(Error::InvalidComment("longer than 1024 bytes"));
    }
    if comment.chars().any(|c| c.is_control() && c != '\t') {
        return Err(Error::InvalidComment("contains a control character other than tab"));
    }
    if comment.ends_with(char::is_whitespace) {
        return Err(Error::InvalidComment("ends with whitespace"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed() -> (SecretKey, Signature) {
        let key = SecretKey::generate().unwrap();
        let signature = key.sign(b"message\n", "timestamp:1\tfile:SHA256SUMS").unwrap();
        (key, signature)
    }

    /// The signature file with line `index` (from 0) replaced.
    fn with_line(signature: &Signature, index: usize, line: &str) -> String {
        let text = signature.to_text();
        let mut lines: Vec<&str> = text.lines().collect();
        lines[index] = line;
        format!("{}\n", lines.join("\n"))
    }

    fn decoded_line(signature: &Signature, index: usize) -> Vec<u8> {
        let text = signature.to_text();
        BASE64.decode(text.lines().nth(index).unwrap()).unwrap()
    }

    #[test]
    fn round_trip() {
        let (key, signature) = signed();
        let parsed = Signature::parse(&signature.to_text()).unwrap();
        assert_eq!(parsed, signature);
        parsed.verify(key.public_key(), b"message\n").unwrap();
        assert_eq!(parsed.trusted_comment(), "timestamp:1\tfile:SHA256SUMS");
        assert!(parsed.untrusted_comment().contains(&key.public_key().key_id().to_string()));
        assert!(matches!(parsed.verify(key.public_key(), b"message!"), Err(Error::BadSignature)));
    }

    #[test]
    fn hostile_signature_files_are_refused_with_a_reason() {
        let (_, signature) = signed();
        let mut sig = decoded_line(&signature, 1);
        let global = decoded_line(&signature, 3);
        let encoded = |bytes: &[u8]| BASE64.encode(bytes);
        let mut prehashed = sig.clone();
        prehashed[1] = b'D';
        let mut other_alg = sig.clone();
        other_alg[..2].copy_from_slice(b"Xy");
        sig.truncate(73);
        let cases: Vec<(String, &str)> = vec![
            (String::new(), "expected 4 lines"),
            (signature.to_text().lines().take(3).collect::<Vec<_>>().join("\n"), "found 3"),
            (format!("{}extra\n", signature.to_text()), "found 5"),
            (with_line(&signature, 0, "comment: x"), "line 1 does not start"),
            (
                with_line(&signature, 0, &format!("untrusted comment: {}", "x".repeat(1100))),
                "line 1 is longer",
            ),
            (with_line(&signature, 1, "not base64!"), "line 2 (the signature) is not valid base64"),
            (
                with_line(&signature, 1, &format!("{}=", encoded(&decoded_line(&signature, 1)))),
                "not valid base64",
            ),
            (with_line(&signature, 1, &encoded(&sig)), "line 2 decodes to 73 bytes"),
            (with_line(&signature, 1, &encoded(&prehashed)), "BLAKE2b"),
            (with_line(&signature, 1, &encoded(&other_alg)), "algorithm \"Xy\""),
            (with_line(&signature, 2, "trusted: x"), "line 3 does not start"),
            (
                with_line(&signature, 2, &format!("trusted comment: {}", "x".repeat(9000))),
                "longer than",
            ),
            (
                with_line(&signature, 3, "%%%"),
                "line 4 (the trusted comment's signature) is not valid base64",
            ),
            (with_line(&signature, 3, &encoded(&global[..63])), "line 4 decodes to 63 bytes"),
            ("x".repeat(20_000), "longer than any"),
        ];
        for (text, expected) in cases {
            let err = Signature::parse(&text).unwrap_err().to_string();
            assert!(err.contains(expected), "{expected:?}: {err}");
        }
    }

    #[test]
    fn wrong_key_id_is_named() {
        let (key, signature) = signed();
        let mut bytes = decoded_line(&signature, 1);
        bytes[2] ^= 0xff;
        let changed = Signature::parse(&with_line(&signature, 1, &BASE64.encode(&bytes))).unwrap();
        let err = changed.verify(key.public_key(), b"message\n").unwrap_err();
        assert!(matches!(err, Error::KeyIdMismatch { .. }), "{err}");
        let message = err.to_string();
        assert!(message.contains(&key.public_key().key_id().to_string()), "{message}");
        assert!(message.contains(&changed.key_id().to_string()), "{message}");
    }

    #[test]
    fn a_changed_trusted_comment_is_caught() {
        let (key, signature) = signed();
        let changed = Signature::parse(&with_line(
            &signature,
            2,
            "trusted comment: timestamp:2\tfile:SHA256SUMS",
        ))
        .unwrap();
        assert!(matches!(
            changed.verify(key.public_key(), b"message\n"),
            Err(Error::BadTrustedComment)
        ));
        // The untrusted comment is not signed: changing it is fine, as with minisign.
        let relabelled =
            Signature::parse(&with_line(&signature, 0, "untrusted comment: anything")).unwrap();
        relabelled.verify(key.public_key(), b"message\n").unwrap();
    }

    #[test]
    fn comments_that_minisign_would_read_back_differently_are_refused() {
        let key = SecretKey::generate().unwrap();
        for comment in ["a\nb", "a\rb", "a\0b", "a\u{1b}[31m", "trailing ", "tab\t"] {
            assert!(
                matches!(key.sign(b"m", comment), Err(Error::InvalidComment(_))),
                "{comment:?}"
            );
        }
        assert!(key.sign(b"m", &"x".repeat(1025)).is_err());
        assert!(key.sign(b"m", "tabs\tare\tfine").is_ok());
        assert!(key.sign(b"m", "").is_ok());
    }
}
