//! TLS against real sockets: a tokio-rustls listener on 127.0.0.1:0 built from
//! `cliproxy_netguard::tls`, reached by a rustls client and by the `openssl s_client` binary,
//! with certificates from a CA generated per test.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use cliproxy_netguard::tls::{self, TlsSettings};
use cliproxy_netguard::{CipherSuiteProblem, Error, TlsConfig, TlsFile, TlsProblem, TlsVersion};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ProtocolVersion, RootCertStore, SupportedProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// A CA made for one test, and the directory its files are written to.
struct Pki {
    dir: tempfile::TempDir,
    ca_der: CertificateDer<'static>,
    ca: Issuer<'static, KeyPair>,
}

/// A leaf certificate as written to disk.
struct Leaf {
    der: CertificateDer<'static>,
    cert_pem: String,
    key_pem: String,
}

impl Pki {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "cliproxy test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let ca_der = cert.der().clone();
        let dir = tempfile::TempDir::new().unwrap();
        std::fs::write(dir.path().join("ca.pem"), cert.pem()).unwrap();
        Self { dir, ca_der, ca: Issuer::new(params, key) }
    }

    /// A leaf for `localhost` and 127.0.0.1, named `cn`.
    fn leaf(&self, cn: &str) -> Leaf {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_after = rcgen::date_time_ymd(2031, 1, 2);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        Leaf { der: cert.der().clone(), cert_pem: cert.pem(), key_pem: key.serialize_pem() }
    }

    fn cert_path(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    fn key_path(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }

    fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Writes the leaf in place over `cert.pem` and `key.pem`, as an operator would.
    fn install(&self, leaf: &Leaf) {
        std::fs::write(self.cert_path(), &leaf.cert_pem).unwrap();
        std::fs::write(self.key_path(), &leaf.key_pem).unwrap();
    }

    fn config(&self) -> TlsConfig {
        let mut cfg = TlsConfig::default();
        cfg.enabled = true;
        cfg.cert_file = Some(self.cert_path());
        cfg.key_file = Some(self.key_path());
        cfg
    }

    fn client(&self, versions: &[&'static SupportedProtocolVersion], alpn: &[&[u8]]) -> Client {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|proto| proto.to_vec()).collect();
        // Every connection is a full handshake: a resumed TLS 1.3 session keeps the identity
        // it was established with and carries no certificate, which would hide a reload.
        config.resumption = rustls::client::Resumption::disabled();
        Client(TlsConnector::from(Arc::new(config)))
    }
}

struct Client(TlsConnector);

impl Client {
    async fn connect(&self, addr: SocketAddr) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        self.0.connect(ServerName::try_from("localhost").unwrap(), tcp).await
    }
}

/// Serves TLS on 127.0.0.1:0 and echoes every byte back, one task per connection.
async fn serve(settings: &TlsSettings) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(settings.server_config());
    let timeout = settings.handshake_timeout();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(Ok(mut tls)) = tokio::time::timeout(timeout, acceptor.accept(tcp)).await
                else {
                    return;
                };
                let mut buf = [0u8; 1024];
                while let Ok(n @ 1..) = tls.read(&mut buf).await {
                    if tls.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

async fn echo(stream: &mut TlsStream<TcpStream>, message: &[u8]) -> Vec<u8> {
    stream.write_all(message).await.unwrap();
    let mut back = vec![0u8; message.len()];
    stream.read_exact(&mut back).await.unwrap();
    back
}

fn peer_leaf(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0].clone().into_owned()
}

fn build(cfg: &TlsConfig) -> TlsSettings {
    TlsSettings::build(cfg).unwrap().expect("enabled")
}

#[tokio::test]
async fn tls13_and_tls12_handshakes_negotiate_alpn() {
    let pki = Pki::new();
    let leaf = pki.leaf("server.example");
    pki.install(&leaf);
    let addr = serve(&build(&pki.config())).await;

    let client = pki.client(&[&rustls::version::TLS13], &[b"h2", b"http/1.1"]);
    let mut stream = client.connect(addr).await.unwrap();
    let conn = stream.get_ref().1;
    assert_eq!(conn.protocol_version(), Some(ProtocolVersion::TLSv1_3));
    assert_eq!(conn.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(peer_leaf(&stream), leaf.der);
    assert_eq!(echo(&mut stream, b"hello").await, b"hello");

    let client = pki.client(&[&rustls::version::TLS12], &[b"http/1.1"]);
    let mut stream = client.connect(addr).await.unwrap();
    let conn = stream.get_ref().1;
    assert_eq!(conn.protocol_version(), Some(ProtocolVersion::TLSv1_2));
    assert_eq!(conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(echo(&mut stream, b"hello").await, b"hello");

    // A client that offers only other protocols is refused (RFC 7301 no_application_protocol)
    // rather than served something it did not ask for.
    let client = pki.client(&[&rustls::version::TLS13], &[b"spdy/3"]);
    assert!(client.connect(addr).await.is_err());
}

#[tokio::test]
async fn min_version_13_refuses_a_tls12_client() {
    let pki = Pki::new();
    pki.install(&pki.leaf("server.example"));
    let mut cfg = pki.config();
    cfg.min_version = TlsVersion::Tls13;
    let addr = serve(&build(&cfg)).await;

    let err = pki.client(&[&rustls::version::TLS12], &[]).connect(addr).await.unwrap_err();
    assert!(err.to_string().contains("ProtocolVersion"), "{err}");
    let stream = pki.client(&[&rustls::version::TLS13], &[]).connect(addr).await.unwrap();
    assert_eq!(stream.get_ref().1.protocol_version(), Some(ProtocolVersion::TLSv1_3));
}

#[tokio::test]
async fn a_restricted_suite_list_is_what_is_negotiated() {
    let pki = Pki::new();
    pki.install(&pki.leaf("server.example"));
    // The rustls client prefers AES-256-GCM; the server allowing only ChaCha20 must win.
    for (suite, version) in [
        ("TLS_CHACHA20_POLY1305_SHA256", &rustls::version::TLS13),
        ("TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", &rustls::version::TLS12),
    ] {
        let mut cfg = pki.config();
        cfg.cipher_suites = vec![suite.to_owned()];
        let addr = serve(&build(&cfg)).await;
        let stream = pki.client(&[version], &[]).connect(addr).await.unwrap();
        let negotiated = stream.get_ref().1.negotiated_cipher_suite().unwrap();
        assert_eq!(Some(negotiated.suite()), tls::cipher_suite_by_name(suite).map(|s| s.suite()));
    }

    // Only TLS 1.2 suites listed: TLS 1.3 is off, so a TLS 1.3-only client cannot connect.
    let mut cfg = pki.config();
    cfg.cipher_suites = vec!["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256".to_owned()];
    let addr = serve(&build(&cfg)).await;
    assert!(pki.client(&[&rustls::version::TLS13], &[]).connect(addr).await.is_err());
}

#[test]
fn unknown_cbc_and_rsa_kx_names_are_rejected_with_the_supported_list() {
    let pki = Pki::new();
    pki.install(&pki.leaf("server.example"));
    for (name, why) in [
        ("TLS_FOO_WITH_BAR", "not a cipher suite name"),
        ("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", "CBC"),
        ("ECDHE-RSA-AES256-SHA384", "CBC"),
        ("TLS_RSA_WITH_AES_256_GCM_SHA384", "RSA key exchange"),
        ("AES256-GCM-SHA384", "RSA key exchange"),
    ] {
        let mut cfg = pki.config();
        cfg.cipher_suites = vec!["TLS_AES_128_GCM_SHA256".to_owned(), name.to_owned()];
        let err = TlsSettings::build(&cfg).unwrap_err();
        let Error::CipherSuites { problem: CipherSuiteProblem::Refused { name: refused, .. } } =
            &err
        else {
            panic!("{name}: not a refused suite: {err:?}")
        };
        assert_eq!(refused, name);
        let text = err.to_string();
        assert!(text.contains(name), "{text}");
        assert!(text.contains(why), "{name}: {text}");
        for supported in tls::supported_cipher_suites() {
            assert!(text.contains(supported), "{supported} missing from {text}");
        }
    }

    // rcgen's keys are ECDSA P-256: TLS 1.2 suites for RSA certificates could never be used.
    let mut cfg = pki.config();
    cfg.cipher_suites = vec![
        "TLS_AES_128_GCM_SHA256".to_owned(),
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".to_owned(),
    ];
    let err = TlsSettings::build(&cfg).unwrap_err();
    assert!(
        matches!(&err, Error::CipherSuites { problem: CipherSuiteProblem::NoneForKey { .. } }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("ECDSA"), "{text}");
    assert!(text.contains(&pki.key_path().display().to_string()), "{text}");
    cfg.cipher_suites.push("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256".to_owned());
    assert!(TlsSettings::build(&cfg).is_ok());

    let mut cfg = pki.config();
    cfg.min_version = TlsVersion::Tls13;
    cfg.cipher_suites = vec!["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".to_owned()];
    let err = TlsSettings::build(&cfg).unwrap_err();
    assert!(
        matches!(&err, Error::CipherSuites { problem: CipherSuiteProblem::NoneAtMinVersion }),
        "{err:?}"
    );
    assert!(err.to_string().contains("minimum version is TLS 1.3"), "{err}");
}

#[test]
fn bad_certificate_and_key_files_name_the_file() {
    let pki = Pki::new();
    let leaf = pki.leaf("server.example");
    let other = pki.leaf("other.example");

    // The key of another certificate.
    std::fs::write(pki.cert_path(), &leaf.cert_pem).unwrap();
    std::fs::write(pki.key_path(), &other.key_pem).unwrap();
    let err = TlsSettings::build(&pki.config()).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Tls { file: TlsFile::Key, problem: TlsProblem::KeyMismatch { .. }, .. }
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains(&pki.key_path().display().to_string()), "{text}");
    assert!(text.contains("does not match"), "{text}");
    assert!(!text.contains("PRIVATE KEY"), "key material must not be echoed: {text}");

    // No certificate in the certificate file (a key given twice).
    std::fs::write(pki.cert_path(), &leaf.key_pem).unwrap();
    std::fs::write(pki.key_path(), &leaf.key_pem).unwrap();
    let text = TlsSettings::build(&pki.config()).unwrap_err().to_string();
    assert!(text.contains(&pki.cert_path().display().to_string()), "{text}");
    assert!(text.contains("no certificate"), "{text}");

    // No key in the key file.
    pki.install(&leaf);
    std::fs::write(pki.key_path(), &leaf.cert_pem).unwrap();
    let err = TlsSettings::build(&pki.config()).unwrap_err();
    assert!(
        matches!(&err, Error::Tls { file: TlsFile::Key, problem: TlsProblem::NoPem, .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains(&pki.key_path().display().to_string()), "{text}");
    assert!(text.contains("private key file"), "{text}");

    // A file that does not exist.
    let mut cfg = pki.config();
    cfg.cert_file = Some(pki.dir.path().join("missing.pem"));
    let err = TlsSettings::build(&cfg).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Tls { file: TlsFile::Certificate, problem: TlsProblem::Unreadable(_), .. }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("missing.pem"), "{err}");

    // The Debug output of a working reloader never shows the key.
    pki.install(&leaf);
    let settings = build(&pki.config());
    let debug = format!("{settings:?}");
    assert!(debug.contains("cert.pem") && !debug.contains("PRIVATE"), "{debug}");
}

#[test]
fn the_leaf_expiry_is_read() {
    let pki = Pki::new();
    pki.install(&pki.leaf("server.example"));
    let settings = build(&pki.config());
    // 2031-01-02T00:00:00Z, the `not_after` given to rcgen.
    assert_eq!(settings.reloader().not_after_unix(), Some(1_925_078_400));
}

#[tokio::test]
async fn a_changed_certificate_is_served_to_new_handshakes_and_old_connections_continue() {
    let pki = Pki::new();
    let first = pki.leaf("first.example");
    pki.install(&first);
    let settings = build(&pki.config());
    let reloader = settings.reloader();
    let addr = serve(&settings).await;
    let client = pki.client(&[&rustls::version::TLS13], &[]);

    let mut established = client.connect(addr).await.unwrap();
    assert_eq!(peer_leaf(&established), first.der);
    assert_eq!(echo(&mut established, b"before").await, b"before");
    assert!(!reloader.reload_if_changed().unwrap(), "nothing changed yet");

    // A longer common name makes the file size differ even if the clock is too coarse to
    // change the modification time between the two writes.
    let second = pki.leaf("second-certificate.example");
    pki.install(&second);
    assert!(reloader.reload_if_changed().unwrap());
    assert!(!reloader.reload_if_changed().unwrap(), "a second check sees no change");

    let fresh = client.connect(addr).await.unwrap();
    assert_eq!(peer_leaf(&fresh), second.der);
    assert_eq!(echo(&mut established, b"after the swap").await, b"after the swap");
    assert_eq!(peer_leaf(&established), first.der);
}

#[tokio::test]
async fn a_bad_new_certificate_keeps_the_old_one() {
    let pki = Pki::new();
    let good = pki.leaf("good.example");
    pki.install(&good);
    let settings = build(&pki.config());
    let reloader = settings.reloader();
    let addr = serve(&settings).await;
    let client = pki.client(&[&rustls::version::TLS13], &[]);

    std::fs::write(pki.cert_path(), "this is not a certificate\n").unwrap();
    let err = reloader.reload_if_changed().unwrap_err().to_string();
    assert!(err.contains(&pki.cert_path().display().to_string()), "{err}");
    // The failure is reported once per change, not on every tick.
    assert!(!reloader.reload_if_changed().unwrap());
    // An explicit reload (SIGHUP) tries again and says why again.
    assert!(reloader.reload().is_err());

    let stream = client.connect(addr).await.unwrap();
    assert_eq!(peer_leaf(&stream), good.der);

    // A new certificate with the old key: rejected for the mismatch, old pair still served.
    let replacement = pki.leaf("replacement.example");
    std::fs::write(pki.cert_path(), &replacement.cert_pem).unwrap();
    let err = reloader.reload_if_changed().unwrap_err().to_string();
    assert!(err.contains("does not match"), "{err}");
    let stream = client.connect(addr).await.unwrap();
    assert_eq!(peer_leaf(&stream), good.der);

    // Once the matching key lands the pair is valid and served.
    std::fs::write(pki.key_path(), &replacement.key_pem).unwrap();
    assert!(reloader.reload_if_changed().unwrap());
    let stream = client.connect(addr).await.unwrap();
    assert_eq!(peer_leaf(&stream), replacement.der);
}

/// Runs `openssl s_client` against `addr` with `args`, with stdin closed so it exits after
/// the handshake.
async fn s_client(pki: &Pki, addr: SocketAddr, args: &[&str]) -> Output {
    let mut command = Command::new("openssl");
    command
        .args(["s_client", "-connect", &addr.to_string(), "-servername", "localhost"])
        .args(["-verify_hostname", "localhost", "-verify_return_error", "-CAfile"])
        .arg(pki.ca_path())
        .args(args)
        .stdin(Stdio::null());
    tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("run `openssl s_client` (apt-get install openssl)")
}

fn text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test]
async fn openssl_s_client_old_protocols_and_cbc_are_refused_tls13_succeeds() {
    let pki = Pki::new();
    pki.install(&pki.leaf("server.example"));
    let addr = serve(&build(&pki.config())).await;

    let modern = s_client(&pki, addr, &["-tls1_3"]).await;
    let out = text(&modern);
    assert!(modern.status.success(), "{out}");
    assert!(out.contains("TLSv1.3"), "{out}");
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");

    // OpenSSL 3 will not even offer TLS 1.0/1.1 at its default security level; at level 0
    // it does, so the refusal below is the server's.
    for version in ["-tls1", "-tls1_1"] {
        let old = s_client(&pki, addr, &[version, "-cipher", "DEFAULT:@SECLEVEL=0"]).await;
        let out = text(&old);
        assert!(!old.status.success(), "{version} accepted: {out}");
        // rustls answers a ClientHello without TLS 1.2 or 1.3 with a fatal alert and no
        // ServerHello, so no cipher is ever agreed.
        assert!(out.contains("Cipher is (NONE)"), "{version}: {out}");
        assert!(
            out.contains("alert handshake failure") || out.contains("alert protocol version"),
            "{version}: {out}"
        );
    }

    let cbc = s_client(&pki, addr, &["-tls1_2", "-cipher", "AES128-SHA"]).await;
    let out = text(&cbc);
    assert!(!cbc.status.success(), "CBC accepted: {out}");
    assert!(out.contains("alert handshake failure"), "{out}");

    // The same client settings with an AEAD suite work, so the refusal above is the suite's.
    let gcm = s_client(&pki, addr, &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"]).await;
    let out = text(&gcm);
    assert!(gcm.status.success(), "{out}");
    assert!(out.contains("ECDHE-ECDSA-AES128-GCM-SHA256"), "{out}");
}
