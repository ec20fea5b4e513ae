//! Running `git` for the integrity checks (the path guard and the secret scanner).
//!
//! Only plumbing commands or porcelain with every output-shaping option given explicitly are
//! used, so a maintainer's `~/.gitconfig` (`diff.noprefix`, `color.ui=always`,
//! `log.showSignature`, an external diff driver, ...) cannot change what is parsed. Every
//! revision given by a caller goes after `--end-of-options`, so it cannot be read as an option.
//!
//! This module is shared with [`crate::secrets`]; it lives under `guard/` only because the
//! crate root (`lib.rs`) declares no private modules yet.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// `git` failed to run or exited non-zero. `reason` is git's own message, made printable.
#[derive(Debug)]
pub(crate) struct GitFailure {
    /// The command, as `git <args>` (arguments made printable).
    pub(crate) command: String,
    /// Why it failed.
    pub(crate) reason: String,
}

/// A repository, addressed by its work-tree top level.
#[derive(Debug, Clone)]
pub(crate) struct Git {
    root: PathBuf,
}

impl Git {
    /// Opens the repository that contains `dir` (any directory inside the work tree).
    pub(crate) fn open(dir: &Path) -> Result<Self, GitFailure> {
        let out = Self { root: dir.to_owned() }.run(["rev-parse", "--show-toplevel"])?;
        let text = String::from_utf8_lossy(&out);
        let root = text.trim_end_matches(['\n', '\r']);
        if root.is_empty() {
            return Err(GitFailure {
                command: "git rev-parse --show-toplevel".to_owned(),
                reason: format!("{} is not inside a git work tree", dir.display()),
            });
        }
        Ok(Self { root: PathBuf::from(root) })
    }

    /// The work-tree top level.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Runs `git <args>` in the repository and returns its standard output.
    pub(crate) fn run<I, S>(&self, args: I) -> Result<Vec<u8>, GitFailure>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<S> = args.into_iter().collect();
        let command = describe(&args);
        let output = self.command(&args).stdin(Stdio::null()).output().map_err(|e| GitFailure {
            command: command.clone(),
            reason: format!("cannot run git: {e}"),
        })?;
        if !output.status.success() {
            return Err(GitFailure {
                command,
                reason: failure_reason(&output.stderr, output.status),
            });
        }
        Ok(output.stdout)
    }

    /// Runs `git <args>` and hands each line of its standard output (without the `\n`) to
    /// `line`, so that long outputs (`git log -p` over a whole history) are never held whole.
    pub(crate) fn stream_lines<I, S, F>(&self, args: I, mut line: F) -> Result<(), GitFailure>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
        F: FnMut(&[u8]),
    {
        let args: Vec<S> = args.into_iter().collect();
        let command = describe(&args);
        let fail = |reason: String| GitFailure { command: command.clone(), reason };
        let mut child = self
            .command(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| fail(format!("cannot run git: {e}")))?;
        // git's standard error is read on its own thread: a chatty stderr must not block git
        // while we are blocked reading its standard output.
        let stderr = child.stderr.take().map(|mut stderr| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = std::io::Read::read_to_end(&mut stderr, &mut buf);
                buf
            })
        });
        let read = match child.stdout.take() {
            Some(stdout) => {
                let mut reader = BufReader::new(stdout);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match reader.read_until(b'\n', &mut buf) {
                        Ok(0) => break Ok(()),
                        Ok(_) => {
                            if buf.last() == Some(&b'\n') {
                                buf.pop();
                            }
                            line(&buf);
                        }
                        Err(e) => break Err(e),
                    }
                }
            }
            None => Ok(()),
        };
        let status = child.wait().map_err(|e| fail(format!("cannot wait for git: {e}")))?;
        let stderr = stderr.and_then(|handle| handle.join().ok()).unwrap_or_default();
        read.map_err(|e| fail(format!("cannot read git's output: {e}")))?;
        if !status.success() {
            return Err(fail(failure_reason(&stderr, status)));
        }
        Ok(())
    }

    fn command<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut command = Command::new("git");
        command.arg("-C").arg(&self.root);
        // Paths are always printed C-quoted when unusual, the way the diff parser expects.
        command.args(["-c", "core.quotePath=true"]);
        command.args(args);
        command
    }
}

/// Splits NUL-terminated git output (`-z`) into its fields, dropping the empty field after
/// the final NUL.
pub(crate) fn nul_fields(out: &[u8]) -> impl Iterator<Item = &[u8]> {
    let out = out.strip_suffix(b"\0").unwrap_or(out);
    out.split(|b| *b == 0).filter(move |_| !out.is_empty())
}

/// A string for humans: control characters (a file name may hold a newline or an escape
/// sequence) are shown escaped, so that output lines cannot be forged or hidden.
pub(crate) fn printable(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    s.chars()
        .map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() })
        .collect()
}

fn describe<S: AsRef<OsStr>>(args: &[S]) -> String {
    let mut command = "git".to_owned();
    for arg in args {
        command.push(' ');
        command.push_str(&printable(&arg.as_ref().to_string_lossy()));
    }
    command
}

fn failure_reason(stderr: &[u8], status: std::process::ExitStatus) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).take(5).collect();
    if lines.is_empty() {
        format!("git exited with {status}")
    } else {
        printable(&lines.join("; "))
    }
}
