//! TLS for a listener (the `tls` feature): the rustls server configuration built from a
//! [`TlsConfig`] on the ring provider only, cipher suites chosen by IANA name, and a
//! certificate resolver that reloads the certificate and key files when they change without
//! dropping connections.
//!
//! The gateway builds a [`TlsSettings`] once at start-up, accepts with
//! [`TlsSettings::server_config`] (a `tokio_rustls::TlsAcceptor` takes it as is), calls
//! [`CertReloader::reload_if_changed`] every [`TlsSettings::reload_interval`] and
//! [`CertReloader::reload`] on SIGHUP, and logs the error either returns: a bad new
//! certificate never replaces the one being served.

use std::fmt;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::{CryptoProvider, KeyProvider, ring};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, SupportedCipherSuite, SupportedProtocolVersion};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{TlsConfig, TlsVersion};
use crate::error::{CipherSuiteProblem, Error, Result, Setting, TlsFile, TlsProblem};

/// The ALPN protocols offered, in order of preference: HTTP/2 first, HTTP/1.1 for clients
/// that do not speak it.
pub const ALPN_PROTOCOLS: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The cipher suites this server implements, by IANA name, paired with rustls's
/// implementation. Every one is an AEAD with forward-secret key exchange: the TLS 1.3 suites
/// and the TLS 1.2 ECDHE suites that rustls implements on ring.
const SUITES: [(&str, SupportedCipherSuite); 9] = [
    ("TLS_AES_256_GCM_SHA384", ring::cipher_suite::TLS13_AES_256_GCM_SHA384),
    ("TLS_AES_128_GCM_SHA256", ring::cipher_suite::TLS13_AES_128_GCM_SHA256),
    ("TLS_CHACHA20_POLY1305_SHA256", ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        ring::cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        ring::cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        ring::cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
];

/// OpenSSL's names for the suites in [`SUITES`], so that an error can point at the IANA
/// name to write instead.
const OPENSSL_NAMES: [(&str, &str); 6] = [
    ("ECDHE-ECDSA-AES256-GCM-SHA384", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"),
    ("ECDHE-ECDSA-AES128-GCM-SHA256", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"),
    ("ECDHE-ECDSA-CHACHA20-POLY1305", "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"),
    ("ECDHE-RSA-AES256-GCM-SHA384", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"),
    ("ECDHE-RSA-AES128-GCM-SHA256", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
    ("ECDHE-RSA-CHACHA20-POLY1305", "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"),
];

/// The IANA names of the cipher suites [`select_cipher_suites`] accepts, TLS 1.3 first.
pub fn supported_cipher_suites() -> Vec<&'static str> {
    SUITES.iter().map(|(name, _)| *name).collect()
}

/// The rustls suite for an IANA cipher suite name (case-insensitive), or `None` when this
/// server does not implement it.
pub fn cipher_suite_by_name(name: &str) -> Option<SupportedCipherSuite> {
    let name = name.trim();
    SUITES.iter().find(|(iana, _)| iana.eq_ignore_ascii_case(name)).map(|(_, suite)| *suite)
}

/// The suites a list of IANA names selects, in the order given, with duplicates removed. An
/// empty list selects every suite in [`supported_cipher_suites`] (rustls's defaults on ring).
/// An unknown or weak name, or a list with no suite usable at `min_version`, is an
/// [`Error::CipherSuites`] that says why and lists the supported names.
pub fn select_cipher_suites(
    names: &[String],
    min_version: TlsVersion,
) -> Result<Vec<SupportedCipherSuite>> {
    if names.is_empty() {
        return Ok(SUITES.iter().map(|(_, suite)| *suite).collect());
    }
    let mut selected: Vec<SupportedCipherSuite> = Vec::with_capacity(names.len());
    for name in names {
        let Some(suite) = cipher_suite_by_name(name) else {
            return Err(suite_error(CipherSuiteProblem::Refused {
                name: name.clone(),
                why: why_refused(name),
            }));
        };
        if !selected.iter().any(|chosen| chosen.suite() == suite.suite()) {
            selected.push(suite);
        }
    }
    if min_version == TlsVersion::Tls13 && selected.iter().all(|suite| suite.tls13().is_none()) {
        return Err(suite_error(CipherSuiteProblem::NoneAtMinVersion));
    }
    Ok(selected)
}

/// The built TLS side of the listener: the rustls configuration, the resolver that serves
/// (and reloads) the certificate, and the timings the gateway applies around them.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    server_config: Arc<ServerConfig>,
    reloader: Arc<CertReloader>,
    handshake_timeout: Duration,
    reload_interval: Duration,
}

impl TlsSettings {
    /// Builds the settings from a [`TlsConfig`]. Returns `Ok(None)` when TLS is disabled; the
    /// cipher suite list is still checked then, so a typo is caught before it is switched on.
    pub fn build(cfg: &TlsConfig) -> Result<Option<Self>> {
        if !cfg.enabled {
            select_cipher_suites(&cfg.cipher_suites, cfg.min_version)?;
            return Ok(None);
        }
        // A zero handshake timeout refuses every client; a zero interval cannot be a timer.
        for (value, setting) in [
            (cfg.handshake_timeout, Setting::HandshakeTimeout),
            (cfg.reload_interval, Setting::ReloadInterval),
        ] {
            if value.is_zero() {
                return Err(Error::InvalidDuration {
                    setting,
                    value,
                    allowed: "longer than 0 (e.g. 10s)",
                });
            }
        }
        let (server_config, reloader) = server_config(cfg)?;
        Ok(Some(Self {
            server_config,
            reloader,
            handshake_timeout: cfg.handshake_timeout,
            reload_interval: cfg.reload_interval,
        }))
    }

    /// The rustls configuration to accept connections with.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.server_config)
    }

    /// The certificate resolver, to reload on a timer and on SIGHUP.
    pub fn reloader(&self) -> Arc<CertReloader> {
        Arc::clone(&self.reloader)
    }

    /// How long a client has to complete the handshake.
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// How often to call [`CertReloader::reload_if_changed`].
    pub fn reload_interval(&self) -> Duration {
        self.reload_interval
    }
}

/// When the leaf (first) certificate of a PEM file expires, in seconds since the Unix epoch.
/// Reads only the certificate, so `cliproxy-server check` can report an expired or unreadable
/// certificate on its own, apart from whether the key matches it.
pub fn certificate_not_after(cert_file: &Path) -> Result<i64> {
    let leaf = CertificateDer::pem_file_iter(cert_file)
        .map_err(|err| pem_error(cert_file, &err, "certificate"))?
        .next()
        .ok_or_else(|| tls_error(TlsFile::Certificate, cert_file, TlsProblem::NoCertificate))?
        .map_err(|err| pem_error(cert_file, &err, "certificate"))?;
    der::not_after(&leaf).ok_or_else(|| {
        tls_error(TlsFile::Certificate, cert_file, TlsProblem::UnparsableCertificate(None))
    })
}

/// Builds the rustls server configuration for a [`TlsConfig`] (whether or not `enabled` is set:
/// the caller has decided to serve TLS) on the ring provider, with only the selected cipher
/// suites, the protocol versions from `min_version`, ALPN `h2` then `http/1.1`, and the
/// certificate served through the returned [`CertReloader`].
pub fn server_config(cfg: &TlsConfig) -> Result<(Arc<ServerConfig>, Arc<CertReloader>)> {
    let suites = select_cipher_suites(&cfg.cipher_suites, cfg.min_version)?;
    let cert_file = cfg.cert_file.as_deref().ok_or(Error::MissingSetting(Setting::CertFile))?;
    let key_file = cfg.key_file.as_deref().ok_or(Error::MissingSetting(Setting::KeyFile))?;

    // Only the versions the selected suites can serve are enabled, so a TLS 1.2-only suite
    // list turns TLS 1.3 off rather than failing every TLS 1.3 handshake.
    let mut versions: Vec<&'static SupportedProtocolVersion> = Vec::with_capacity(2);
    if suites.iter().any(|suite| suite.tls13().is_some()) {
        versions.push(&rustls::version::TLS13);
    }
    if cfg.min_version == TlsVersion::Tls12 && suites.iter().any(|suite| suite.tls13().is_none()) {
        versions.push(&rustls::version::TLS12);
    }

    let tls12_suites: Vec<SupportedCipherSuite> =
        suites.iter().filter(|suite| suite.tls13().is_none()).copied().collect();

    // The provider is always given explicitly, never taken from the process default, so the
    // suites above are exactly the ones offered whatever else in the process installed.
    let provider = CryptoProvider { cipher_suites: suites, ..ring::default_provider() };
    let key_provider = provider.key_provider;
    let reloader = Arc::new(CertReloader::load(cert_file, key_file, key_provider)?);
    // A TLS 1.2 suite names the certificate type it signs with; a list whose TLS 1.2 suites
    // all need the other type would fail every TLS 1.2 handshake, so it is refused here.
    let algorithm = reloader.current().key.algorithm();
    if versions.contains(&&rustls::version::TLS12)
        && !tls12_suites.iter().any(|suite| suite.usable_for_signature_algorithm(algorithm))
    {
        return Err(suite_error(CipherSuiteProblem::NoneForKey {
            algorithm: format!("{algorithm:?}"),
            key_file: key_file.to_path_buf(),
        }));
    }
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&versions)
        .map_err(|err| suite_error(CipherSuiteProblem::Rejected(err.to_string())))?
        .with_no_client_auth()
        .with_cert_resolver(reloader.clone());
    config.alpn_protocols = ALPN_PROTOCOLS.iter().map(|proto| proto.to_vec()).collect();
    Ok((Arc::new(config), reloader))
}

/// Serves the certificate and key from their two files, and
/// swaps in a new pair when the files change. A connection keeps the certificate it was
/// handshaken with; only new handshakes see a swap.
pub struct CertReloader {
    cert_file: PathBuf,
    key_file: PathBuf,
    key_provider: &'static dyn KeyProvider,
    /// Read without a lock by every handshake; written only under `last_seen`.
    current: ArcSwap<Loaded>,
    // The fingerprint of the files at the last load attempt. The mutex also serialises
    // reloads, so a SIGHUP and the timer cannot interleave their reads and swaps.
    last_seen: Mutex<Option<Fingerprint>>,
}

impl CertReloader {
    /// Loads the certificate chain and key, checking that the key belongs to the leaf
    /// certificate. `key_provider` is the provider's, normally ring's.
    pub fn load(
        cert_file: &Path,
        key_file: &Path,
        key_provider: &'static dyn KeyProvider,
    ) -> Result<Self> {
        let fingerprint = Fingerprint::of(cert_file, key_file)?;
        let loaded = load_pair(cert_file, key_file, key_provider)?;
        Ok(Self {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            key_provider,
            current: ArcSwap::from_pointee(loaded),
            last_seen: Mutex::new(Some(fingerprint)),
        })
    }

    /// Re-reads both files and serves the new pair if it is valid. On an error (unreadable
    /// file, no certificate, no key, key not matching the certificate) the pair being served
    /// stays, and the error says which file and why, for the gateway to log.
    pub fn reload(&self) -> Result<()> {
        let mut last_seen = self.last_seen.lock().unwrap_or_else(PoisonError::into_inner);
        // The fingerprint is taken before reading, so a write that lands during the read
        // changes it again and is picked up on the next check.
        *last_seen = Fingerprint::of(&self.cert_file, &self.key_file).ok();
        self.swap()
    }

    /// Reloads only if either file's size, modification time or inode changed since the last
    /// attempt, and returns whether a new pair is now served. A changed but invalid pair is
    /// reported once (the error) and not retried until the files change again.
    pub fn reload_if_changed(&self) -> Result<bool> {
        let mut last_seen = self.last_seen.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Fingerprint::of(&self.cert_file, &self.key_file)?;
        if last_seen.as_ref() == Some(&now) {
            return Ok(false);
        }
        *last_seen = Some(now);
        self.swap().map(|()| true)
    }

    /// The pair being served.
    pub fn current(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.read().key)
    }

    /// When the leaf certificate being served expires, in seconds since the Unix epoch, or
    /// `None` if its validity could not be read.
    pub fn not_after_unix(&self) -> Option<i64> {
        self.read().not_after
    }

    /// The certificate file being watched.
    pub fn cert_file(&self) -> &Path {
        &self.cert_file
    }

    /// The key file being watched.
    pub fn key_file(&self) -> &Path {
        &self.key_file
    }

    fn swap(&self) -> Result<()> {
        let loaded = load_pair(&self.cert_file, &self.key_file, self.key_provider)?;
        self.current.store(Arc::new(loaded));
        Ok(())
    }

    fn read(&self) -> arc_swap::Guard<Arc<Loaded>> {
        self.current.load()
    }
}

impl ResolvesServerCert for CertReloader {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl fmt::Debug for CertReloader {
    // The key stays out of Debug output; the paths and expiry are what an operator needs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertReloader")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("not_after_unix", &self.not_after_unix())
            .finish_non_exhaustive()
    }
}

/// A certificate chain with its key, and the leaf's expiry.
struct Loaded {
    key: Arc<CertifiedKey>,
    not_after: Option<i64>,
}

/// What identifies a version of the two files without reading them.
#[derive(Debug, PartialEq, Eq)]
struct Fingerprint([FileStamp; 2]);

#[derive(Debug, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Fingerprint {
    fn of(cert_file: &Path, key_file: &Path) -> Result<Self> {
        Ok(Self([
            FileStamp::of(TlsFile::Certificate, cert_file)?,
            FileStamp::of(TlsFile::Key, key_file)?,
        ]))
    }
}

impl FileStamp {
    fn of(file: TlsFile, path: &Path) -> Result<Self> {
        // `metadata` follows symlinks, so a swapped link (as Kubernetes secret volumes do)
        // shows up as a new inode.
        let meta = fs::metadata(path)
            .map_err(|err| tls_error(file, path, TlsProblem::Unreadable(err.to_string())))?;
        Ok(Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        })
    }
}

fn load_pair(
    cert_file: &Path,
    key_file: &Path,
    key_provider: &'static dyn KeyProvider,
) -> Result<Loaded> {
    let chain = CertificateDer::pem_file_iter(cert_file)
        .map_err(|err| pem_error(cert_file, &err, "certificate"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| pem_error(cert_file, &err, "certificate"))?;
    if chain.is_empty() {
        return Err(tls_error(TlsFile::Certificate, cert_file, TlsProblem::NoCertificate));
    }
    let key_der =
        PrivateKeyDer::from_pem_file(key_file).map_err(|err| pem_error(key_file, &err, "key"))?;
    let key = key_provider.load_private_key(key_der).map_err(|err| {
        tls_error(TlsFile::Key, key_file, TlsProblem::UnusableKey(err.to_string()))
    })?;
    let certified = CertifiedKey::new(chain, key);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(tls_error(
                TlsFile::Key,
                key_file,
                TlsProblem::KeyMismatch { certificate: cert_file.to_path_buf() },
            ));
        }
        Err(err) => {
            return Err(tls_error(
                TlsFile::Certificate,
                cert_file,
                TlsProblem::UnparsableCertificate(Some(err.to_string())),
            ));
        }
    }
    let not_after = certified.end_entity_cert().ok().and_then(|leaf| der::not_after(leaf));
    Ok(Loaded { key: Arc::new(certified), not_after })
}

/// Describes a PEM error without echoing the file's contents: a key file's lines are secret.
fn pem_error(path: &Path, err: &pem::Error, what: &str) -> Error {
    let problem = match err {
        pem::Error::Io(io) => TlsProblem::Unreadable(io.to_string()),
        pem::Error::NoItemsFound => TlsProblem::NoPem,
        _ => TlsProblem::NotPem,
    };
    let file = if what == "key" { TlsFile::Key } else { TlsFile::Certificate };
    tls_error(file, path, problem)
}

fn tls_error(file: TlsFile, path: &Path, problem: TlsProblem) -> Error {
    Error::Tls { file, path: path.to_path_buf(), problem }
}

fn suite_error(problem: CipherSuiteProblem) -> Error {
    Error::CipherSuites { problem }
}

/// Why a name that is not in [`SUITES`] is refused, recognising IANA and OpenSSL spellings.
fn why_refused(name: &str) -> String {
    let upper = name.trim().to_ascii_uppercase().replace('-', "_");
    if let Some((_, iana)) =
        OPENSSL_NAMES.iter().find(|(openssl, _)| openssl.replace('-', "_") == upper)
    {
        return format!("that is OpenSSL's name; write the IANA name {iana}");
    }
    let tokens: Vec<&str> = upper.split('_').filter(|token| !token.is_empty()).collect();
    let has = |wanted: &str| tokens.contains(&wanted);
    let has_prefix = |prefix: &str| tokens.iter().any(|token| token.starts_with(prefix));
    let iana = tokens.first() == Some(&"TLS") || tokens.first() == Some(&"SSL");
    // The key exchange is the word after `TLS_` in IANA names and the first word of OpenSSL
    // names; OpenSSL names that start with the cipher use RSA key exchange.
    let kx = if iana { tokens.get(1).copied() } else { tokens.first().copied() };
    let block_cipher = ["AES", "CAMELLIA", "ARIA", "SEED", "IDEA"];
    let aead = has("GCM") || has_prefix("CCM") || has("CHACHA20") || has("POLY1305");

    let mut reasons: Vec<&str> = Vec::new();
    if has("NULL") || has("ENULL") {
        reasons.push("it does not encrypt (NULL cipher)");
    }
    if has_prefix("EXP") {
        reasons.push("it is export-grade, with deliberately weak keys (FREAK, Logjam)");
    }
    if has("ANON") || has("ADH") || has("AECDH") || has("ANULL") {
        reasons.push("its key exchange is anonymous, so the server is not authenticated");
    }
    if has("RC4") {
        reasons.push("RC4 is broken and forbidden by RFC 7465");
    }
    if has("3DES") || has("DES") || has_prefix("CBC3") || has("DES40") {
        reasons.push("DES and 3DES have a 64-bit block (Sweet32)");
    }
    if has("CBC") || (!aead && block_cipher.iter().any(|cipher| has_prefix(cipher)) && !has("NULL"))
    {
        reasons.push("it uses CBC mode, open to padding-oracle attacks such as Lucky13");
    }
    let rsa_kx = match kx {
        Some("RSA") => iana || tokens.get(1) != Some(&"PSK"),
        Some(first) => {
            !iana
                && (block_cipher.iter().any(|cipher| first.starts_with(cipher))
                    || ["DES", "RC4", "NULL", "CAMELLIA128", "CAMELLIA256"].contains(&first))
        }
        None => false,
    };
    if rsa_kx {
        reasons.push("it uses RSA key exchange, which has no forward secrecy");
    }
    if matches!(kx, Some("DH" | "ECDH")) {
        reasons.push("its static (EC)DH key exchange has no forward secrecy");
    }
    if !reasons.is_empty() {
        return reasons.join("; ");
    }
    if has("DHE") || has("EDH") {
        return "finite-field DHE suites are not implemented by rustls; use an ECDHE suite"
            .to_owned();
    }
    if has_prefix("CCM") || has("PSK") || has("SRP") || has("ARIA") || has("CAMELLIA") {
        return "rustls does not implement this suite".to_owned();
    }
    "it is not a cipher suite name this server knows".to_owned()
}

/// Just enough DER to read a certificate's `notAfter`, for the expiry check; anything
/// unexpected gives `None`, never a panic.
mod der {
    /// The leaf's `notAfter` in seconds since the Unix epoch.
    pub(super) fn not_after(cert: &[u8]) -> Option<i64> {
        // Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL,
        //   serialNumber, signature, issuer, validity SEQUENCE { notBefore, notAfter }, ... } }
        let (_, cert_body, _) = read(cert)?;
        let (_, mut tbs, _) = read(cert_body)?;
        let (tag, _, rest) = read(tbs)?;
        if tag == 0xa0 {
            tbs = rest;
        }
        // Skip the serial number, signature algorithm and issuer.
        for _ in 0..3 {
            tbs = read(tbs)?.2;
        }
        let (_, validity, _) = read(tbs)?;
        let (_, _, after_not_before) = read(validity)?;
        let (tag, time, _) = read(after_not_before)?;
        parse_time(tag, std::str::from_utf8(time).ok()?)
    }

    /// Splits one TLV off the front: (tag, contents, rest).
    fn read(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, input) = input.split_first()?;
        let (&first, mut input) = input.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 {
                return None;
            }
            let (bytes, rest) = input.split_at_checked(count)?;
            input = rest;
            bytes.iter().try_fold(0usize, |acc, &b| acc.checked_mul(256)?.checked_add(b.into()))?
        };
        let (contents, rest) = input.split_at_checked(len)?;
        Some((tag, contents, rest))
    }

    /// UTCTime (`YYMMDDHHMMSSZ`, tag 0x17) or GeneralizedTime (`YYYYMMDDHHMMSSZ`, 0x18).
    fn parse_time(tag: u8, text: &str) -> Option<i64> {
        let digits = text.strip_suffix('Z')?;
        let (year, rest) = match tag {
            0x17 => {
                let yy: i64 = digits.get(..2)?.parse().ok()?;
                // RFC 5280: two-digit years 50-99 are 19xx, 00-49 are 20xx.
                (if yy >= 50 { 1900 + yy } else { 2000 + yy }, digits.get(2..)?)
            }
            0x18 => (digits.get(..4)?.parse().ok()?, digits.get(4..)?),
            _ => return None,
        };
        if rest.len() != 10 || !rest.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let field = |at: usize| rest.get(at..at + 2)?.parse::<i64>().ok();
        let (month, day) = (field(0)?, field(2)?);
        let (hour, minute, second) = (field(4)?, field(6)?, field(8)?);
        if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
            return None;
        }
        // The 1st of the month from the calendar, then the fields as they are written: the
        // day and time are range-checked loosely on purpose, as the expiry check only warns.
        let month = time::Month::try_from(u8::try_from(month).ok()?).ok()?;
        let first = time::Date::from_calendar_date(i32::try_from(year).ok()?, month, 1).ok()?;
        let first = first.midnight().assume_utc().unix_timestamp();
        Some(first + (day - 1) * 86_400 + hour * 3600 + minute * 60 + second)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn times_parse_to_unix_seconds() {
            assert_eq!(parse_time(0x17, "700101000000Z"), Some(0));
            assert_eq!(parse_time(0x17, "491231235959Z"), Some(2_524_607_999));
            assert_eq!(parse_time(0x18, "20000229120000Z"), Some(951_825_600));
            assert_eq!(parse_time(0x18, "20000229120000"), None);
            assert_eq!(parse_time(0x17, "7001010000Z"), None);
        }

        #[test]
        fn truncated_der_is_none_not_a_panic() {
            assert_eq!(not_after(&[]), None);
            assert_eq!(not_after(&[0x30, 0x82, 0xff]), None);
            assert_eq!(not_after(&[0x30, 0x03, 0x30, 0x01]), None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_supported_name_maps_to_its_rustls_suite() {
        for name in supported_cipher_suites() {
            let suite = cipher_suite_by_name(name).map(|suite| suite.suite());
            let rustls_name = suite.and_then(|suite| suite.as_str()).unwrap_or_default();
            // rustls spells the TLS 1.3 suites `TLS13_*`; the IANA names are `TLS_*`.
            assert_eq!(rustls_name.replacen("TLS13_", "TLS_", 1), name);
        }
        assert_eq!(supported_cipher_suites().len(), ring::ALL_CIPHER_SUITES.len());
    }

    #[test]
    fn zero_durations_are_refused_naming_the_key() {
        for key in ["handshake_timeout", "reload_interval"] {
            let mut cfg = TlsConfig { enabled: true, ..TlsConfig::default() };
            if key == "handshake_timeout" {
                cfg.handshake_timeout = Duration::ZERO;
            } else {
                cfg.reload_interval = Duration::ZERO;
            }
            let error = TlsSettings::build(&cfg).unwrap_err();
            let setting = if key == "handshake_timeout" {
                Setting::HandshakeTimeout
            } else {
                Setting::ReloadInterval
            };
            assert!(
                matches!(error, Error::InvalidDuration { setting: s, value: Duration::ZERO, .. } if s == setting),
                "{error:?}"
            );
            assert!(error.to_string().contains("must be longer than 0"), "{error}");
        }
    }

    #[test]
    fn names_are_case_insensitive_and_duplicates_dropped() {
        let names = vec!["tls_aes_128_gcm_sha256".to_owned(), "TLS_AES_128_GCM_SHA256".to_owned()];
        let suites = select_cipher_suites(&names, TlsVersion::Tls13).unwrap();
        assert_eq!(suites.len(), 1);
    }

    #[test]
    fn weak_names_say_why() {
        let cases = [
            ("TLS_RSA_WITH_AES_128_CBC_SHA", &["RSA key exchange", "CBC"][..]),
            ("AES128-SHA", &["RSA key exchange", "CBC"]),
            ("AES128-GCM-SHA256", &["RSA key exchange"]),
            ("TLS_RSA_WITH_AES_128_GCM_SHA256", &["RSA key exchange"]),
            ("ECDHE-RSA-AES128-SHA256", &["CBC"]),
            ("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256", &["CBC"]),
            ("DES-CBC3-SHA", &["Sweet32"]),
            ("TLS_RSA_WITH_3DES_EDE_CBC_SHA", &["Sweet32", "CBC", "RSA"]),
            ("RC4-SHA", &["RC4"]),
            ("TLS_ECDHE_RSA_WITH_RC4_128_SHA", &["RC4"]),
            ("TLS_RSA_WITH_NULL_SHA256", &["NULL"]),
            ("EXP-RC4-MD5", &["export"]),
            ("TLS_RSA_EXPORT_WITH_RC4_40_MD5", &["export"]),
            ("ADH-AES128-GCM-SHA256", &["anonymous"]),
            ("TLS_DH_anon_WITH_AES_128_GCM_SHA256", &["anonymous"]),
            ("TLS_ECDH_RSA_WITH_AES_128_GCM_SHA256", &["static (EC)DH"]),
            ("DHE-RSA-AES128-GCM-SHA256", &["not implemented"]),
            ("TLS_AES_128_CCM_SHA256", &["does not implement"]),
            ("ECDHE-RSA-AES128-GCM-SHA256", &["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"]),
            ("TLS_MADE_UP", &["not a cipher suite name"]),
        ];
        for (name, expected) in cases {
            let err = select_cipher_suites(&[name.to_owned()], TlsVersion::Tls12).unwrap_err();
            assert!(
                matches!(&err, Error::CipherSuites { problem: CipherSuiteProblem::Refused { name: n, .. } } if n == name),
                "{err:?}"
            );
            let text = err.to_string();
            assert!(text.starts_with(&format!("`{name}` is refused: ")), "{text}");
            assert!(text.contains("TLS_AES_128_GCM_SHA256, "), "lists supported: {text}");
            for part in expected {
                assert!(text.contains(part), "{name}: expected {part:?} in {text}");
            }
        }
    }

    #[test]
    fn tls12_only_suites_with_min_version_13_is_refused() {
        let names = vec!["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256".to_owned()];
        assert!(select_cipher_suites(&names, TlsVersion::Tls12).is_ok());
        let err = select_cipher_suites(&names, TlsVersion::Tls13).unwrap_err();
        assert!(
            matches!(err, Error::CipherSuites { problem: CipherSuiteProblem::NoneAtMinVersion }),
            "{err:?}"
        );
        assert!(err.to_string().contains("minimum version is TLS 1.3"), "{err}");
    }

    #[test]
    fn the_error_text_lists_the_suites_this_module_implements() {
        assert_eq!(crate::error::supported_suites(), supported_cipher_suites().join(", "));
    }

    #[test]
    fn empty_list_is_every_supported_suite() {
        let suites = select_cipher_suites(&[], TlsVersion::Tls12).unwrap();
        assert_eq!(suites.len(), supported_cipher_suites().len());
    }

    #[test]
    fn enabled_without_files_names_the_key() {
        let cfg = TlsConfig { enabled: true, ..TlsConfig::default() };
        let err = TlsSettings::build(&cfg).unwrap_err();
        assert!(matches!(err, Error::MissingSetting(Setting::CertFile)), "{err:?}");
        let cfg = TlsConfig {
            enabled: true,
            cert_file: Some(PathBuf::from("/nonexistent/cert.pem")),
            ..TlsConfig::default()
        };
        let err = TlsSettings::build(&cfg).unwrap_err();
        assert!(matches!(err, Error::MissingSetting(Setting::KeyFile)), "{err:?}");
    }

    #[test]
    fn the_expiry_of_a_certificate_file_is_read_without_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2031, 1, 2);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        fs::write(&cert_file, cert.pem()).unwrap();
        fs::write(&key_file, key.serialize_pem()).unwrap();
        // 2031-01-02T00:00:00Z.
        assert_eq!(certificate_not_after(&cert_file).unwrap(), 1_925_078_400);
        // A key file holds no certificate; the error names the file and the key, not its lines.
        let err = certificate_not_after(&key_file).unwrap_err();
        assert!(
            matches!(&err, Error::Tls { file: TlsFile::Certificate, path, problem: TlsProblem::NoCertificate } if *path == key_file),
            "{err:?}"
        );
        let err = err.to_string();
        assert!(err.contains("key.pem") && err.contains("certificate file"), "{err}");
        assert!(!err.contains("PRIVATE"), "{err}");
        assert!(certificate_not_after(&dir.path().join("missing.pem")).is_err());
    }

    #[test]
    fn disabled_is_none_but_still_checks_suites() {
        assert!(TlsSettings::build(&TlsConfig::default()).unwrap().is_none());
        let cfg = TlsConfig { cipher_suites: vec!["RC4-MD5".to_owned()], ..TlsConfig::default() };
        assert!(TlsSettings::build(&cfg).is_err());
    }
}
