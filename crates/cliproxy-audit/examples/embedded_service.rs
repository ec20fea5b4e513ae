//! The audit layer embedded in a service that is not cliproxy: a tiny line-protocol login
//! service on 127.0.0.1:0 whose every login (accepted or refused) goes through the hash-chained
//! audit log with the peer's address, with signed checkpoints, metrics and the sink's notices
//! printed by the service itself. Once it has stopped, the service's own file is verified with
//! the crate's verifier, and a copy with one line changed is shown to fail at that line.
//!
//! `cargo run -p cliproxy-audit --example embedded_service`: asserts what it shows and exits 0.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::SystemTime;

use cliproxy_audit::{
    Audit, AuditConfig, EventType, Metrics, MetricsConfig, Notice, Plane, Problem, Severity,
    SignedCheck, SinkOptions, What, verify_files, verify_files_signed,
};
use ring::signature::{Ed25519KeyPair, KeyPair};

/// The service's one account (a real service would keep a hash, not the password).
const USER: &str = "alice";
const PASSWORD: &str = "correct horse";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("logins.audit");

    // The service's own key for signed checkpoints: with the public key alone, an auditor can
    // later tell a log cut short from a complete one.
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
        .map_err(|_| "cannot make a signing key")?;
    let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| "bad signing key")?;
    let public_key: [u8; 32] = key.public_key().as_ref().try_into()?;

    // The sink's notices go to the service's own log (here: stderr, with their severity).
    let mut options = SinkOptions::default();
    options.signer = Some(Arc::new(key));
    options.notify = Some(Arc::new(|notice: Notice| {
        let level = match notice.severity() {
            Severity::Info => "info",
            Severity::Warning => "warn",
            _ => "error",
        };
        eprintln!("[{level}] {notice}");
    }));
    let config = AuditConfig::new(&path);
    let metrics = Arc::new(Metrics::new(&MetricsConfig::default(), []));
    let sink = config.build(metrics.clone(), options)?;
    let audit = Arc::new(Audit::new(sink, metrics));

    // The service: one connection at a time, `LOGIN user password` → `OK` or `DENIED`.
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let server = {
        let audit = audit.clone();
        std::thread::spawn(move || -> std::io::Result<()> {
            for _ in 0..3 {
                let (stream, peer) = listener.accept()?;
                serve(&audit, stream, peer.ip())?;
            }
            Ok(())
        })
    };

    // Three clients: a wrong password, the right one, an unknown user.
    let answers: Vec<String> = [("alice", "guess"), (USER, PASSWORD), ("mallory", "x")]
        .into_iter()
        .map(|(user, password)| login(addr, user, password))
        .collect::<Result<_, _>>()?;
    assert_eq!(answers, ["DENIED", "OK", "DENIED"]);
    server.join().map_err(|_| "the service panicked")??;

    // The metrics counted every event (the service's refusals carry no provider, so they are
    // labelled `none`); the service would serve `render()` to Prometheus.
    let text = audit.metrics().render();
    let failures = text
        .lines()
        .find(|l| l.starts_with("cliproxy_auth_failures_total{provider=\"none\"}"))
        .ok_or("no auth failure counted")?;
    assert!(failures.ends_with(" 2"), "{failures}");

    // Stopping: the queued lines and a shutdown checkpoint are written and synced.
    audit.shutdown();
    drop(audit);

    // The auditor's side: the chain verifies, and with the public key so do the checkpoints
    // and the tail (the log ends with the shutdown checkpoint, so nothing was cut).
    let verified = verify_files(&[&path])?;
    println!("{}", verified.to_string().lines().next().unwrap_or_default());
    let now = SystemTime::now();
    let signed = verify_files_signed(&[&path], Some(SignedCheck { public_key, now }))?;
    assert_eq!(signed.lines, verified.lines);
    assert_eq!(signed.checkpoints, Some(2), "the start and the shutdown checkpoints");
    let text = std::fs::read_to_string(&path)?;
    let lines: Vec<&str> = text.lines().collect();
    // Start checkpoint, three logins, shutdown checkpoint.
    assert_eq!(lines.len(), 5, "{text}");
    let refused = lines.iter().filter(|l| l.contains(EventType::AuthFailure.as_str())).count();
    assert_eq!(refused, 2);

    // Someone turns the refused `mallory` into an accepted login: the verifier names the line.
    let (at, line) =
        lines.iter().enumerate().find(|(_, l)| l.contains("\"mallory\"")).ok_or("no mallory")?;
    let forged = line.replace("\"event_type\":\"auth_failure\"", "\"event_type\":\"auth_success\"");
    assert_ne!(&forged, line);
    let mut tampered: Vec<String> = lines.iter().map(|l| format!("{l}\n")).collect();
    tampered[at] = format!("{forged}\n");
    let copy = dir.path().join("tampered.audit");
    std::fs::write(&copy, tampered.concat())?;
    let broken = verify_files(&[&copy]).err().ok_or("a tampered log verified")?;
    println!("tampered copy: {broken}");
    assert_eq!(broken.line, at as u64 + 1);
    assert_eq!(broken.problem, Problem::Changed);

    println!("ok: the service's logins were chained, verified, and the forged line was found");
    Ok(())
}

/// Handles one connection: reads one command, answers it, and audits the outcome with the
/// peer's address.
fn serve(audit: &Audit, stream: TcpStream, peer: std::net::IpAddr) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut command = String::new();
    reader.read_line(&mut command)?;
    let mut words = command.trim_end().splitn(3, ' ');
    let (verb, user, password) = (words.next(), words.next(), words.next());
    let accepted = verb == Some("LOGIN") && user == Some(USER) && password == Some(PASSWORD);
    let event = if accepted {
        cliproxy_audit::Event::new(What::AuthSuccess).user(USER)
    } else {
        // The refused user name is recorded, the password never.
        let what = What::AuthFailure { plane: Plane::Client, reason: "invalid_login", repeats: 0 };
        cliproxy_audit::Event::new(what).user(user.unwrap_or_default())
    };
    // Queued for the writer thread: the answer never waits for the disk.
    let fired = audit.emit(event.ip(peer));
    assert!(fired.is_empty(), "no alert rules configured");
    let mut stream = stream;
    stream.write_all(if accepted { b"OK\n" } else { b"DENIED\n" })
}

/// One client: connects, sends `LOGIN user password`, returns the answer.
fn login(addr: std::net::SocketAddr, user: &str, password: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    stream.write_all(format!("LOGIN {user} {password}\n").as_bytes())?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer)?;
    Ok(answer.trim_end().to_owned())
}
