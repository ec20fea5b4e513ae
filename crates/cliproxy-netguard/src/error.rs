//! The guard's one error type. Its text is about this library — a setting, a file, a value —
//! and never names a key of the configuration file that set it: that file belongs to whoever
//! embeds the crate. The cliproxy gateway maps each variant to its own keys
//! (`server.tls.cert_file`, `state.path`, …) when it reports one; the fields are there so that
//! any caller can do the same without reading the text.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// What can go wrong building or running the guard.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting that is required here was not given.
    #[error("{}", missing(*.0))]
    MissingSetting(Setting),
    /// A duration outside the range the setting allows.
    #[error("the {setting} is {value:?}; it must be {allowed}")]
    InvalidDuration {
        /// Which setting.
        setting: Setting,
        /// The value given.
        value: Duration,
        /// The range allowed, and why.
        allowed: &'static str,
    },
    /// A security header whose configured value cannot be sent.
    #[error(
        "the value of the {header} header is not a valid header value (printable ASCII, no line \
         breaks)"
    )]
    InvalidHeaderValue {
        /// The header, by its lowercase wire name (`x-frame-options`).
        header: http::HeaderName,
    },
    /// A list of TLS cipher suites that cannot be served.
    #[error("{problem}. Supported suites (IANA names): {}", supported_suites())]
    CipherSuites {
        /// What is wrong with the list.
        problem: CipherSuiteProblem,
    },
    /// A certificate or private key file that cannot be used.
    #[error("{} ({file}): {problem}", path.display())]
    Tls {
        /// Which of the two files.
        file: TlsFile,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: TlsProblem,
    },
    /// The shared state store (Redis) cannot be used as configured.
    #[error("{message}")]
    Redis {
        /// The setting at fault.
        setting: Setting,
        /// What is wrong, never quoting the URL (it may hold the password).
        message: String,
    },
    /// The state database could not be opened, read or written.
    #[error("state store {}: {message}", path.display())]
    State {
        /// The database file.
        path: PathBuf,
        /// What failed, and what to do about it.
        message: String,
    },
}

impl Error {
    /// The setting the error is about, when it is about one: what a caller maps to the key
    /// of its own configuration file. A state store failure is about [`Setting::StatePath`]
    /// (its file), a cipher suite list about [`Setting::CipherSuites`].
    pub fn setting(&self) -> Option<Setting> {
        match self {
            Self::MissingSetting(setting) | Self::InvalidDuration { setting, .. } => Some(*setting),
            Self::InvalidHeaderValue { .. } => None,
            Self::CipherSuites { .. } => Some(Setting::CipherSuites),
            Self::Tls { file: TlsFile::Certificate, .. } => Some(Setting::CertFile),
            Self::Tls { file: TlsFile::Key, .. } => Some(Setting::KeyFile),
            Self::State { .. } => Some(Setting::StatePath),
            Self::Redis { setting, .. } => Some(*setting),
        }
    }
}

/// The settings of this crate that an [`Error`] can be about, named in the library's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Setting {
    /// The state database file.
    StatePath,
    /// How often the state store writes its batch.
    FlushInterval,
    /// The shared state store's URL.
    RedisUrl,
    /// The CA file of a `rediss://` server.
    RedisCaFile,
    /// How long a request waits on the shared state store.
    RedisTimeout,
    /// The TLS certificate chain file.
    CertFile,
    /// The TLS private key file.
    KeyFile,
    /// The TLS cipher suites.
    CipherSuites,
    /// The time a TLS client has to complete its handshake.
    HandshakeTimeout,
    /// How often the certificate files are checked for changes.
    ReloadInterval,
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::StatePath => "state database path",
            Self::FlushInterval => "state flush interval",
            Self::RedisUrl => "Redis URL",
            Self::RedisCaFile => "Redis CA file",
            Self::RedisTimeout => "Redis timeout",
            Self::CertFile => "TLS certificate file",
            Self::KeyFile => "TLS private key file",
            Self::CipherSuites => "TLS cipher suite list",
            Self::HandshakeTimeout => "TLS handshake timeout",
            Self::ReloadInterval => "certificate reload interval",
        })
    }
}

/// Which file of a TLS certificate pair an [`Error::Tls`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFile {
    /// The PEM certificate chain, leaf first.
    Certificate,
    /// The PEM private key of the leaf certificate.
    Key,
}

impl fmt::Display for TlsFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Certificate => "certificate file",
            Self::Key => "private key file",
        })
    }
}

/// What is wrong with a certificate or key file. The text never quotes the file: a key
/// file's lines are secret.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsProblem {
    /// It cannot be read (or its metadata cannot).
    Unreadable(String),
    /// It holds no PEM section of the kind expected.
    NoPem,
    /// It is not valid PEM.
    NotPem,
    /// It holds PEM, but no certificate.
    NoCertificate,
    /// The leaf certificate cannot be parsed.
    UnparsableCertificate(Option<String>),
    /// The private key cannot be used with the ring provider.
    UnusableKey(String),
    /// The private key is not the key of the leaf certificate in `certificate`.
    KeyMismatch {
        /// The certificate file it was checked against.
        certificate: PathBuf,
    },
}

impl fmt::Display for TlsProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreadable(cause) => write!(f, "cannot read it: {cause}"),
            Self::NoPem => f.write_str("no PEM section of the expected kind found in it"),
            Self::NotPem => f.write_str("it is not valid PEM"),
            Self::NoCertificate => f.write_str(
                "no certificate found; it must hold a PEM chain (BEGIN CERTIFICATE), leaf first",
            ),
            Self::UnparsableCertificate(None) => {
                f.write_str("the leaf certificate cannot be parsed (no readable validity period)")
            }
            Self::UnparsableCertificate(Some(cause)) => {
                write!(f, "the leaf certificate cannot be parsed ({cause})")
            }
            Self::UnusableKey(cause) => write!(
                f,
                "the private key cannot be used ({cause}); give an RSA, ECDSA P-256/P-384 or \
                 Ed25519 key"
            ),
            Self::KeyMismatch { certificate } => write!(
                f,
                "the private key does not match the certificate in {}; give the key the \
                 certificate was issued for",
                certificate.display()
            ),
        }
    }
}

/// What is wrong with a list of TLS cipher suites.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CipherSuiteProblem {
    /// A name that is not a suite this server implements, and why (weak, OpenSSL's
    /// spelling, not implemented by rustls, unknown).
    Refused {
        /// The name as given.
        name: String,
        /// Why it is refused.
        why: String,
    },
    /// Every suite listed is a TLS 1.2 suite, but the minimum version is TLS 1.3.
    NoneAtMinVersion,
    /// No TLS 1.2 suite listed can sign with the key's algorithm.
    NoneForKey {
        /// The key's algorithm, as rustls names it.
        algorithm: String,
        /// The key file.
        key_file: PathBuf,
    },
    /// rustls refused the combination of suites and versions.
    Rejected(String),
}

impl fmt::Display for CipherSuiteProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Refused { name, why } => write!(f, "`{name}` is refused: {why}"),
            Self::NoneAtMinVersion => f.write_str(
                "every suite listed is a TLS 1.2 suite, but the minimum version is TLS 1.3, so \
                 no client could connect; add a TLS 1.3 suite (TLS_AES_128_GCM_SHA256, \
                 TLS_AES_256_GCM_SHA384 or TLS_CHACHA20_POLY1305_SHA256) or lower the minimum \
                 version to 1.2",
            ),
            Self::NoneForKey { algorithm, key_file } => write!(
                f,
                "no TLS 1.2 suite listed can be used with the {algorithm} key in {}, so every \
                 TLS 1.2 handshake would fail; list TLS_ECDHE_ECDSA_* suites for an ECDSA or \
                 Ed25519 key and TLS_ECDHE_RSA_* suites for an RSA key",
                key_file.display()
            ),
            Self::Rejected(cause) => write!(f, "rustls refused the suites and versions: {cause}"),
        }
    }
}

/// The text of a [`Error::MissingSetting`].
fn missing(setting: Setting) -> String {
    match setting {
        Setting::CertFile => "no TLS certificate file is set, but TLS is enabled: name the PEM \
                              certificate chain (leaf first)"
            .to_owned(),
        Setting::KeyFile => "no TLS private key file is set, but TLS is enabled: name the PEM \
                             private key of the certificate"
            .to_owned(),
        Setting::StatePath => "no state database path is set: name the database file".to_owned(),
        other => format!("the {other} is not set"),
    }
}

/// The suites the `tls` module implements, for the text of [`Error::CipherSuites`]; they are
/// listed here too so that the error type does not depend on the `tls` feature.
pub(crate) fn supported_suites() -> &'static str {
    "TLS_AES_256_GCM_SHA384, TLS_AES_128_GCM_SHA256, TLS_CHACHA20_POLY1305_SHA256, \
     TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, \
     TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, \
     TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"
}

/// The guard's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
