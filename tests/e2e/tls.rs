//! The TLS catalogue (issue 9, item 7): `openssl s_client` (and two hand-made hellos that
//! `s_client` cannot send) against the real binary's TLS listener, serving an RSA certificate
//! so that the RSA key exchange and DHE suites *could* be negotiated if the gateway allowed
//! them. Accepted: TLS 1.3 and TLS 1.2 ECDHE with AES-GCM or ChaCha20-Poly1305. Refused: SSLv3,
//! TLS 1.0, TLS 1.1, CBC suites, RSA key exchange, DHE, client-initiated renegotiation. Also
//! checked: secure renegotiation indication and no compression. After every case the gateway
//! still serves HTTPS. `.ci/tls-scan.sh` runs sslyze's Mozilla intermediate profile.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;

use cliproxy_e2e::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HEALTHZ: &str = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";

/// Writes an RSA-2048 self-signed certificate for 127.0.0.1 to `dir`; returns (cert, key).
fn rsa_cert(dir: &Path) -> (String, String) {
    let cert = dir.join("rsa.crt");
    let key = dir.join("rsa.key");
    let output = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args(["-subj", "/CN=e2e-rsa", "-addext", "subjectAltName=IP:127.0.0.1"])
        .output()
        .expect("run openssl req");
    assert!(output.status.success(), "openssl req: {}", String::from_utf8_lossy(&output.stderr));
    (cert.display().to_string(), key.display().to_string())
}

/// `openssl s_client` against `addr` with `args`, `input` on its standard input; returns exit
/// success and all output.
async fn s_client(addr: SocketAddr, args: &[&str], input: &str) -> (bool, String) {
    let mut child = tokio::process::Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string(), "-servername", "localhost"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run openssl s_client");
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(input.as_bytes()).await;
    drop(stdin);
    let output = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("openssl s_client did not finish")
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// A ClientHello record with `version` in the record and the hello, offering `suites` and the
/// compression methods `compression`, without extensions (as SSLv3 sent them).
fn raw_hello(version: [u8; 2], suites: &[u16], compression: &[u8]) -> Vec<u8> {
    let mut hello = Vec::new();
    hello.extend_from_slice(&version);
    hello.extend_from_slice(&[0x5a; 32]); // client random
    hello.push(0); // no session id
    hello.extend_from_slice(&u16::try_from(suites.len() * 2).unwrap().to_be_bytes());
    for suite in suites {
        hello.extend_from_slice(&suite.to_be_bytes());
    }
    hello.push(u8::try_from(compression.len()).unwrap());
    hello.extend_from_slice(compression);
    let mut handshake = vec![1, 0];
    handshake.extend_from_slice(&u16::try_from(hello.len()).unwrap().to_be_bytes());
    handshake.extend_from_slice(&hello);
    let mut record = vec![0x16];
    record.extend_from_slice(&version);
    record.extend_from_slice(&u16::try_from(handshake.len()).unwrap().to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

/// Sends `hello` and reads what comes back until the gateway closes: refused when the answer
/// is empty or a TLS alert record (content type 21), never a ServerHello (22).
async fn raw_refused(addr: SocketAddr, hello: &[u8]) -> (bool, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(hello).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the gateway neither answered nor closed after a raw hello");
    (answer.first().is_none_or(|b| *b == 21), answer)
}

/// What a case expects of the handshake.
enum Expect {
    /// Negotiated, and the output names this protocol and cipher.
    Accepted(&'static str, &'static str),
    /// Refused with an alert (or a handshake failure) — not because the client had nothing
    /// to offer.
    Refused,
}

struct Case {
    name: &'static str,
    args: &'static [&'static str],
    expect: Expect,
}

fn catalogue() -> Vec<Case> {
    use Expect::*;
    let case = |name, args, expect| Case { name, args, expect };
    vec![
        case(
            "TLS 1.3 AES-256-GCM",
            &["-tls1_3", "-ciphersuites", "TLS_AES_256_GCM_SHA384"],
            Accepted("TLSv1.3", "TLS_AES_256_GCM_SHA384"),
        ),
        case(
            "TLS 1.3 AES-128-GCM",
            &["-tls1_3", "-ciphersuites", "TLS_AES_128_GCM_SHA256"],
            Accepted("TLSv1.3", "TLS_AES_128_GCM_SHA256"),
        ),
        case(
            "TLS 1.3 ChaCha20-Poly1305",
            &["-tls1_3", "-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256"],
            Accepted("TLSv1.3", "TLS_CHACHA20_POLY1305_SHA256"),
        ),
        case(
            "TLS 1.2 ECDHE-RSA AES-128-GCM",
            &["-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"],
            Accepted("TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256"),
        ),
        case(
            "TLS 1.2 ECDHE-RSA AES-256-GCM",
            &["-tls1_2", "-cipher", "ECDHE-RSA-AES256-GCM-SHA384"],
            Accepted("TLSv1.2", "ECDHE-RSA-AES256-GCM-SHA384"),
        ),
        case(
            "TLS 1.2 ECDHE-RSA ChaCha20-Poly1305",
            &["-tls1_2", "-cipher", "ECDHE-RSA-CHACHA20-POLY1305"],
            Accepted("TLSv1.2", "ECDHE-RSA-CHACHA20-POLY1305"),
        ),
        case("TLS 1.0", &["-tls1", "-cipher", "DEFAULT:@SECLEVEL=0"], Refused),
        case("TLS 1.1", &["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"], Refused),
        case("TLS 1.2 RSA kx AES-128-CBC-SHA", &["-tls1_2", "-cipher", "AES128-SHA"], Refused),
        case("TLS 1.2 RSA kx AES-128-GCM", &["-tls1_2", "-cipher", "AES128-GCM-SHA256"], Refused),
        case("TLS 1.2 RSA kx AES-256-GCM", &["-tls1_2", "-cipher", "AES256-GCM-SHA384"], Refused),
        case(
            "TLS 1.2 RSA kx AES-256-CBC-SHA256",
            &["-tls1_2", "-cipher", "AES256-SHA256"],
            Refused,
        ),
        case(
            "TLS 1.2 ECDHE-RSA AES-128-CBC-SHA",
            &["-tls1_2", "-cipher", "ECDHE-RSA-AES128-SHA"],
            Refused,
        ),
        case(
            "TLS 1.2 ECDHE-RSA AES-256-CBC-SHA384",
            &["-tls1_2", "-cipher", "ECDHE-RSA-AES256-SHA384"],
            Refused,
        ),
        case(
            "TLS 1.2 DHE-RSA AES-128-GCM",
            &["-tls1_2", "-cipher", "DHE-RSA-AES128-GCM-SHA256"],
            Refused,
        ),
        case(
            "TLS 1.2 DHE-RSA ChaCha20-Poly1305",
            &["-tls1_2", "-cipher", "DHE-RSA-CHACHA20-POLY1305"],
            Refused,
        ),
    ]
}

/// A TLS gateway with an RSA certificate; returns it and the certificate path (trust anchor).
async fn rsa_gateway(harness: &Harness, dir: &Path, limits: &str) -> (Gateway, String) {
    let (cert, key) = rsa_cert(dir);
    harness.config(limits, "providers:\n  demo: {type: mock, models: [\"mock-*\"]}\n");
    // `server.tls` goes in the server section: rewrite the file with it.
    let config = std::fs::read_to_string(harness.config_path()).unwrap().replacen(
        &format!("  limits: {{{limits}}}\n"),
        &format!(
            "  limits: {{{limits}}}\n  tls: {{enabled: true, cert_file: {cert:?}, key_file: {key:?}, \
             min_version: \"1.2\"}}\n"
        ),
        1,
    );
    harness.write_config(&config);
    (harness.start().await, cert)
}

/// HTTPS still works: `GET /healthz` verified against the certificate.
async fn still_serves(addr: SocketAddr, ca: &str, after: &str) {
    let (ok, out) =
        s_client(addr, &["-CAfile", ca, "-verify_return_error", "-ign_eof"], HEALTHZ).await;
    assert!(ok && out.contains("HTTP/1.1 200"), "HTTPS stopped working after {after}:\n{out}");
}

#[tokio::test]
async fn tls_catalogue_accepts_modern_suites_and_refuses_old_protocols_cbc_rsa_kx_dhe() {
    let harness = Harness::new();
    let dir = tempfile::tempdir().unwrap();
    let (gateway, ca) = rsa_gateway(&harness, dir.path(), "").await;
    let addr = gateway.addr();
    still_serves(addr, &ca, "the start").await;
    let cases = catalogue();
    let mut failures = Vec::new();
    for case in &cases {
        let (ok, out) = s_client(addr, case.args, "").await;
        let passed = match case.expect {
            Expect::Accepted(protocol, cipher) => {
                ok && out.contains(&format!("New, {protocol}, Cipher is {cipher}\n"))
                    && out.contains("Compression: NONE")
                    && (protocol == "TLSv1.3" || out.contains("Secure Renegotiation IS supported"))
            }
            Expect::Refused => {
                !ok && !out.contains("no protocols available")
                    && !out.contains("no cipher match")
                    && (out.contains("alert") || out.contains("handshake failure"))
            }
        };
        if !passed {
            failures.push(format!("{}: {:?}\n{out}", case.name, case.args));
        }
        still_serves(addr, &ca, case.name).await;
    }

    // What s_client cannot offer: SSLv3 (not built into this OpenSSL), and a TLS 1.2 hello
    // whose only compression method is DEFLATE.
    let raw = [
        ("SSLv3 hello", raw_hello([3, 0], &[0x002f, 0x000a], &[0])),
        ("TLS 1.2 hello with DEFLATE only", raw_hello([3, 3], &[0xc02f, 0xc030], &[1])),
    ];
    for (name, hello) in &raw {
        let (refused, answer) = raw_refused(addr, hello).await;
        if !refused {
            failures.push(format!("{name}: answered {answer:02x?}"));
        }
        still_serves(addr, &ca, name).await;
    }
    assert!(
        failures.is_empty(),
        "{} of the TLS cases failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    report::cases(
        "tls",
        "tls_catalogue_accepts_modern_suites_and_refuses_old_protocols_cbc_rsa_kx_dhe",
        cases.len() + raw.len(),
    );
}

/// rustls does not renegotiate: it answers a ClientHello on an established TLS 1.2
/// connection with a `no_renegotiation` warning alert and goes on. tokio-rustls sends that
/// alert only with the next write, and the client, waiting for a ServerHello, writes nothing
/// more: the connection stays idle until the header read timeout closes it. What is checked:
/// s_client renegotiates (`R`), no second ServerHello ever comes, the server closes the
/// connection, and the gateway keeps serving.
#[tokio::test]
async fn client_initiated_renegotiation_is_refused_and_the_gateway_keeps_serving() {
    let harness = Harness::new();
    let dir = tempfile::tempdir().unwrap();
    let (gateway, ca) = rsa_gateway(&harness, dir.path(), "header_read_timeout: 2s").await;
    let addr = gateway.addr();
    // `R` on a line of its own makes s_client renegotiate; its standard input stays open so
    // that it exits only when the server closes the connection. `-msg` shows each handshake
    // message. (`-ign_eof` would turn s_client's commands off.)
    // Both streams in one pipe, so that `RENEGOTIATING` (stderr) and the messages (stdout)
    // stay in order.
    let mut child = tokio::process::Command::new("sh")
        .args(["-c", "exec openssl s_client -connect \"$0\" -tls1_2 -msg 2>&1", &addr.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run openssl s_client");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"R\n").await.unwrap();
    let output = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("the server did not close the connection after the renegotiation attempt")
        .unwrap();
    drop(stdin);
    let out = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(out.contains("Secure Renegotiation IS supported"), "{out}");
    let (before, after) = out
        .split_once("RENEGOTIATING")
        .unwrap_or_else(|| panic!("s_client did not try to renegotiate:\n{out}"));
    assert!(before.contains("ServerHello"), "{out}");
    assert!(after.contains("ClientHello"), "no renegotiating ClientHello was sent:\n{out}");
    assert!(!after.contains("ServerHello"), "the server renegotiated:\n{out}");
    still_serves(addr, &ca, "the renegotiation attempt").await;
    let logs = gateway.logs();
    assert!(!logs.contains("panicked"), "{logs}");
    report::cases(
        "tls",
        "client_initiated_renegotiation_is_refused_and_the_gateway_keeps_serving",
        1,
    );
}

/// Issue 18 item 19: `serve` looks at the private key's mode as `check` does, and says at
/// start when every user of the machine can read it (and how to fix it); a 0600 key is quiet.
#[tokio::test]
async fn serve_warns_when_every_user_can_read_the_tls_key() {
    use std::os::unix::fs::PermissionsExt;
    const WARNING: &str = "the TLS private key is readable by every user of this machine";
    let dir = tempfile::tempdir().unwrap();
    let harness = Harness::new();
    let (cert, key) = rsa_cert(dir.path());
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    harness.config("", "providers:\n  demo: {type: mock, models: [\"mock-*\"]}\n");
    let config = std::fs::read_to_string(harness.config_path()).unwrap().replacen(
        "  limits: {}\n",
        &format!(
            "  limits: {{}}\n  tls: {{enabled: true, cert_file: {cert:?}, key_file: {key:?}}}\n"
        ),
        1,
    );
    harness.write_config(&config);
    let gateway = harness.start().await;
    // The warning is written before the `listening` line `start` waits for.
    let warned = gateway.log_entries(WARNING);
    assert_eq!(warned.len(), 1, "{}", gateway.logs());
    let fix = warned[0]["fix"].as_str().unwrap_or_default();
    assert!(fix.contains("chmod 600") && fix.contains("rsa.key"), "{}", warned[0]);
    drop(gateway);

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let gateway = harness.start().await;
    assert!(gateway.log_entries(WARNING).is_empty(), "{}", gateway.logs());
}

/// `demo --tls` keeps its throwaway CA, certificate and key in its own directory: that
/// directory and the demo's directory above it (which also holds the vault and the audit log)
/// are 0700, so another user of the host cannot list or read them.
#[tokio::test]
async fn the_demo_tls_directory_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let (mut child, banner) = demo(&["--tls", "--port", "0"]).await;
    let ca = banner
        .split_whitespace()
        .skip_while(|word| *word != "--cacert")
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| panic!("no `--cacert` in the banner:\n{banner}"));
    let tls_dir = ca.parent().unwrap().to_owned();
    let demo_dir = tls_dir.parent().unwrap().to_owned();
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let (tls_mode, demo_mode) = (mode(&tls_dir), mode(&demo_dir));
    child.kill().await.unwrap();
    std::fs::remove_dir_all(&demo_dir).unwrap();
    assert_eq!(format!("{tls_mode:o}"), "700", "{}", tls_dir.display());
    assert_eq!(format!("{demo_mode:o}"), "700", "{}", demo_dir.display());
}
