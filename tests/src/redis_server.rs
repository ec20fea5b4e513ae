//! A real `redis-server` for the tests (Debian's package; `.ci/run` installs it when missing),
//! started on a loopback port of its own with its data in a temporary directory, and killed
//! when dropped. Standard library only, so that the layer crates' own tests can include this
//! file (`#[path = …] mod redis_server;`) as the end-to-end suite does, without depending on it.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a start may take before the test fails with the server's own output.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// One `redis-server` process.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    args: Vec<String>,
}

impl RedisServer {
    /// No persistence, no password.
    pub fn start() -> Self {
        Self::start_with(&["--save", "", "--appendonly", "no"])
    }

    /// With these extra arguments (`--requirepass`, `--appendonly yes`, …).
    pub fn start_with(args: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "cliproxy-redis-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create the Redis directory");
        let mut server = Self {
            child: None,
            port: 0,
            dir,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
        };
        let mut last = String::new();
        for _ in 0..5 {
            server.port = free_port();
            match server.spawn() {
                Ok(()) => return server,
                Err(output) => last = output,
            }
        }
        panic!("redis-server did not start: {last}");
    }

    /// `redis://127.0.0.1:PORT` (with the password when one was given).
    pub fn url(&self) -> String {
        match self.password() {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its data directory (the AOF and RDB files).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn password(&self) -> Option<&str> {
        let at = self.args.iter().position(|a| a == "--requirepass")?;
        self.args.get(at + 1).map(String::as_str)
    }

    /// SIGKILL, as a crash: nothing is written on the way out.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and directory (after [`RedisServer::kill`]); with
    /// `--appendonly yes` it reloads what it had written.
    pub fn restart(&mut self) {
        self.kill();
        let mut last = String::new();
        for _ in 0..50 {
            match self.spawn() {
                Ok(()) => return,
                // The port may still be in TIME_WAIT for a moment after the kill.
                Err(output) if output.contains("Address already in use") => {
                    last = output;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(output) => panic!("redis-server did not restart: {output}"),
            }
        }
        panic!("redis-server did not restart: {last}");
    }

    /// Runs `redis-cli` against it and returns its standard output.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut command = Command::new("redis-cli");
        command.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(password) = self.password() {
            command.env("REDISCLI_AUTH", password);
        }
        let output = command.args(args).output().expect("run redis-cli");
        assert!(
            output.status.success(),
            "redis-cli {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn spawn(&mut self) -> Result<(), String> {
        let mut child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--dir"])
            .arg(&self.dir)
            .args(["--logfile", "", "--daemonize", "no", "--protected-mode", "yes"])
            .args(&self.args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run redis-server (apt-get install redis-server): {e}"))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (ready, wait) = mpsc::channel();
        std::thread::spawn(move || {
            let mut seen = String::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                seen.push_str(&line);
                seen.push('\n');
                if line.contains("Ready to accept connections") {
                    let _ = ready.send(Ok(()));
                    // Keep draining, so that the server never blocks on a full pipe.
                    continue;
                }
            }
            let _ = ready.send(Err(seen));
        });
        match wait.recv_timeout(START_TIMEOUT) {
            Ok(Ok(())) => {
                self.child = Some(child);
                Ok(())
            }
            Ok(Err(output)) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(output)
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!("redis-server was not ready within {START_TIMEOUT:?}"))
            }
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("its address").port()
}
