//! The gateway keeps serving while the sandbox denies what it must deny. The child process is
//! this binary run again with `CLIPROXY_SANDBOXED_SERVER` set: it composes the gateway as
//! `serve` does (sandbox first, on the only thread; then the logger, the gateway and the
//! runtime), serves on 127.0.0.1, and on each line of its stdin attempts one forbidden act
//! from a runtime thread, printing `RESULT …`. The parent sends real HTTP requests between
//! the attempts.
//!
//! Built without libtest's harness (`harness = false`), so the child's sandbox goes on while
//! the process has one thread.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use cliproxy_gateway::{Gateway, Server};
use cliproxy_server::compose;
use cliproxy_server::config::Config;

const CHILD: &str = "CLIPROXY_SANDBOXED_SERVER";
const CLIENT_KEY: &str = "cpk-sandboxed-server-test-5c1e9a7d";

fn main() {
    if let Ok(dir) = std::env::var(CHILD) {
        child(Path::new(&dir));
        return;
    }
    println!("test execve_open_outside_and_ptrace_are_denied_while_the_gateway_serves ...");
    execve_open_outside_and_ptrace_are_denied_while_the_gateway_serves();
    println!("test execve_open_outside_and_ptrace_are_denied_while_the_gateway_serves ... ok");
}

fn child(dir: &Path) {
    let yaml = format!(
        "server: {{host: 127.0.0.1, port: 0}}\n\
         auth: {{api_keys: [\"{CLIENT_KEY}\"], dir: {auths:?}}}\n\
         providers: {{demo: {{type: mock, models: [\"mock-*\"]}}}}\n\
         logging: {{audit: {{enabled: true, file: {audit:?}}}}}\n\
         sandbox: {{require_non_root: false}}\n",
        auths = dir.join("auths").display().to_string(),
        audit = dir.join("audit").join("audit.log").display().to_string(),
    );
    let config = Config::from_yaml(&yaml).unwrap();
    let paths = Gateway::sandbox_paths(&config.gateway(), None).unwrap();
    let applied = cliproxy_container::sandbox::apply(&config.sandbox, &paths).unwrap();
    println!("APPLIED {applied:?}");
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let gateway = compose::gateway(&config, &log).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async move {
        let server = Server::bind(&config.server, gateway, log).await.unwrap();
        println!("ADDR {}", server.local_addr().unwrap());
        tokio::spawn(server.run(std::future::pending()));
        loop {
            let line = tokio::task::spawn_blocking(|| {
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line).map(|_| line)
            })
            .await
            .unwrap()
            .unwrap();
            // Each attempt runs on a runtime worker thread, started after the sandbox.
            let result = tokio::spawn(attempt(line.trim().to_owned())).await.unwrap();
            println!("RESULT {result}");
            if line.is_empty() {
                return;
            }
        }
    });
}

async fn attempt(what: String) -> String {
    match what.split_once(' ').unwrap_or((what.as_str(), "")) {
        ("exec", program) => match std::process::Command::new(program).status() {
            Ok(status) => format!("exec ran: {status}"),
            Err(error) => format!("exec refused: {:?}", error.raw_os_error()),
        },
        ("open", path) => match std::fs::read(path) {
            Ok(_) => "read it".to_owned(),
            Err(error) => format!("open refused: {:?}", error.raw_os_error()),
        },
        ("ptrace", _) => {
            let me = nix::unistd::Pid::from_raw(i32::try_from(std::process::id()).unwrap());
            format!("ptrace returned {:?}", nix::sys::ptrace::attach(me))
        }
        ("", _) => "bye".to_owned(),
        (other, _) => format!("unknown command {other}"),
    }
}

struct Running {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    transcript: String,
}

impl Running {
    fn line(&mut self, prefix: &str) -> String {
        loop {
            let mut line = String::new();
            let n = self.stdout.read_line(&mut line).unwrap();
            self.transcript.push_str(&line);
            assert!(n > 0, "the child ended before printing {prefix}: {}", self.transcript);
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.trim().to_owned();
            }
        }
    }

    fn attempt(&mut self, command: &str) -> String {
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
        self.line("RESULT ")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request on a fresh connection; returns the status line and the body.
fn http(addr: SocketAddr, request: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    stream.write_all(request.as_bytes())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

fn chat(addr: SocketAddr) -> std::io::Result<String> {
    let body = r#"{"model":"mock-1","messages":[{"role":"user","content":"hi"}]}"#;
    http(
        addr,
        &format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\
             Authorization: Bearer {CLIENT_KEY}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
}

fn assert_serves(addr: SocketAddr, after: &str) {
    let answer = chat(addr).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "after {after}: {answer}");
    assert!(answer.contains("chat.completion"), "after {after}: {answer}");
}

fn execve_open_outside_and_ptrace_are_denied_while_the_gateway_serves() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside.txt");
    std::fs::write(&outside, "not for the gateway").unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(CHILD, dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut running = Running { child, stdin, stdout, transcript: String::new() };
    let applied = running.line("APPLIED ");
    assert!(
        applied.contains("seccomp: true") && applied.contains("no_new_privs: true"),
        "{applied}"
    );
    // Asked for, landlock is enforced or reported as unsupported by the kernel, never off.
    assert!(!applied.contains("landlock: Off"), "{applied}");
    let landlock_on = applied.contains("Enforced") || applied.contains("Partial");
    let addr: SocketAddr = running.line("ADDR ").parse().unwrap();
    assert_serves(addr, "start");

    let exec = running.attempt("exec /bin/true");
    assert_eq!(exec, format!("exec refused: Some({})", libc::EPERM));
    assert_serves(addr, "execve");

    let open = running.attempt(&format!("open {}", outside.display()));
    if landlock_on {
        assert_eq!(open, format!("open refused: Some({})", libc::EACCES));
    } else {
        assert_eq!(open, "read it", "landlock reported unsupported: nothing is restricted");
    }
    // What the gateway may read is still readable: its own audit file.
    let audit = dir.path().join("audit").join("audit.log");
    assert_eq!(running.attempt(&format!("open {}", audit.display())), "read it");
    assert_serves(addr, "the refused open");

    // ptrace is hostile: the filter kills the whole process, not just the thread.
    writeln!(running.stdin, "ptrace").unwrap();
    running.stdin.flush().unwrap();
    let status = running.child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGSYS), "{status:?}: {}", running.transcript);
    assert!(!running.transcript.contains("ptrace returned"), "{}", running.transcript);
    assert!(chat(addr).is_err(), "a killed gateway must not answer");
}
