//! A minimal HTTPS listener on `cliproxy_netguard::tls`, for `.ci/tls-scan.sh` to scan until
//! the gateway serves TLS through this module. It answers every request with a fixed
//! `HTTP/1.1 200` and reloads the certificate files when they change.
//!
//! ```text
//! cargo run -p cliproxy-netguard --example tls_listener -- --cert cert.pem --key key.pem --port 0
//! ```
//!
//! It prints `listening 127.0.0.1:PORT` once it accepts connections.

use std::error::Error;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use cliproxy_netguard::TlsConfig;
use cliproxy_netguard::tls::TlsSettings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n";

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let args = Args::parse(std::env::args().skip(1))?;
    let mut cfg = TlsConfig::default();
    cfg.enabled = true;
    cfg.cert_file = Some(args.cert);
    cfg.key_file = Some(args.key);
    let settings = TlsSettings::build(&cfg)?.ok_or("TLS is disabled")?;

    // This listener speaks only HTTP/1.1, so it must not offer h2 in ALPN; the gateway keeps
    // the configuration's `h2`, `http/1.1`.
    let mut server_config = (*settings.server_config()).clone();
    server_config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(server_config));

    let listener = TcpListener::bind(("127.0.0.1", args.port)).await?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening {}", listener.local_addr()?)?;
    stdout.flush()?;

    // What the gateway does: check the files every `reload_interval` and log a failure,
    // which leaves the old certificate in service.
    let reloader = settings.reloader();
    let interval = settings.reload_interval();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        loop {
            ticks.tick().await;
            match reloader.reload_if_changed() {
                Ok(true) => eprintln!("certificate reloaded"),
                Ok(false) => {}
                Err(err) => eprintln!("certificate not reloaded: {err}"),
            }
        }
    });

    loop {
        let (tcp, _) = listener.accept().await?;
        let acceptor = acceptor.clone();
        let timeout = settings.handshake_timeout();
        tokio::spawn(async move {
            // The handshake runs in the connection's own task with a deadline, so a client
            // that stalls mid-handshake holds nothing but its own task.
            let Ok(Ok(mut tls)) = tokio::time::timeout(timeout, acceptor.accept(tcp)).await else {
                return;
            };
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 * 1024 {
                match tls.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => request.extend_from_slice(buf.get(..n).unwrap_or_default()),
                }
            }
            if tls.write_all(RESPONSE).await.is_ok() {
                let _ = tls.shutdown().await;
            }
        });
    }
}

/// `--cert PATH --key PATH --port N`.
struct Args {
    cert: PathBuf,
    key: PathBuf,
    port: u16,
}

impl Args {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Self, Box<dyn Error>> {
        let usage = "usage: tls_listener --cert CERT.pem --key KEY.pem --port PORT";
        let (mut cert, mut key, mut port) = (None, None, None);
        while let Some(flag) = args.next() {
            let value = args.next().ok_or(usage)?;
            match flag.as_str() {
                "--cert" => cert = Some(PathBuf::from(value)),
                "--key" => key = Some(PathBuf::from(value)),
                "--port" => port = Some(value.parse::<u16>()?),
                _ => return Err(usage.into()),
            }
        }
        Ok(Self { cert: cert.ok_or(usage)?, key: key.ok_or(usage)?, port: port.unwrap_or(0) })
    }
}
