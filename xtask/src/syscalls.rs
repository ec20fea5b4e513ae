//! `cargo xtask syscalls`: traces the real server with `strace -f` while the end-to-end suite
//! runs against it, and compares the syscalls it made with the allowlist in
//! `cliproxy-container` (the list the in-process seccomp filter and the Docker profile use).
//!
//! The server is started through a wrapper that runs it under strace with the seccomp filter
//! off (`CLIPROXY_SANDBOX__SECCOMP=false`), so the trace shows what it needs, not what it is
//! allowed. Calls traced but not allowed are errors (the filter would break that path);
//! calls allowed but not traced are listed for review (they may serve paths the suite does
//! not reach, other libcs or the other architecture).

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

/// Options of `cargo xtask syscalls`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Exit 1 when the server made a call the allowlist does not allow.
    #[arg(long)]
    check: bool,
    /// Only run the end-to-end tests whose names contain this filter.
    #[arg(long, value_name = "FILTER")]
    tests: Option<String>,
}

pub(crate) fn run(args: Args) -> Result<ExitCode> {
    if Command::new("strace").arg("-V").output().is_err() {
        bail!("strace is not installed (apt-get install -y strace)");
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(&cargo)
        .args(["build", "--locked", "-p", "cliproxy-server"])
        .status()
        .context("cannot run cargo build")?;
    if !status.success() {
        bail!("building cliproxy-server failed");
    }
    let binary = std::fs::canonicalize("target/debug/cliproxy-server")
        .context("target/debug/cliproxy-server is missing after the build")?;
    let dir = std::env::temp_dir().join(format!("cliproxy-syscalls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let wrapper = dir.join("traced-server");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nCLIPROXY_SANDBOX__SECCOMP=false exec strace -f -qq -o {}/trace.$$ -- {} \"$@\"\n",
            dir.display(),
            binary.display()
        ),
    )?;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))?;

    eprintln!(
        "xtask: running the end-to-end suite against the server under strace (slower; some timing-sensitive tests may fail, which does not matter here)"
    );
    let mut test = Command::new(&cargo);
    test.args([
        "test",
        "--locked",
        "-p",
        "cliproxy-e2e",
        "--test",
        "e2e",
        "--",
        "--test-threads=2",
    ])
    .env("CLIPROXY_SERVER_BIN", &wrapper);
    if let Some(filter) = &args.tests {
        test.arg(filter);
    }
    let suite = test.status().context("cannot run the end-to-end suite")?;
    if !suite.success() {
        eprintln!("xtask: some tests failed under strace; the trace is still used");
    }

    let traced = traced_syscalls(&dir)?;
    let _ = std::fs::remove_dir_all(&dir);
    if traced.is_empty() {
        bail!("the trace is empty: did the suite start the server through the wrapper?");
    }
    let allowed: BTreeSet<&str> = allowed_here();
    let missing: Vec<&String> =
        traced.iter().filter(|name| !allowed.contains(name.as_str()) && !ignored(name)).collect();
    let untraced: Vec<&&str> = allowed.iter().filter(|name| !traced.contains(**name)).collect();
    println!(
        "{} distinct syscalls traced; {} allowed on this architecture",
        traced.len(),
        allowed.len()
    );
    println!("allowed but not traced (other paths, libcs or architectures; review): {untraced:?}");
    for denied in cliproxy_container::syscalls::DENIED_ON_PURPOSE {
        if traced.contains(denied.name) {
            println!("traced and denied on purpose: {} ({})", denied.name, denied.reason);
        }
    }
    if missing.is_empty() {
        println!("every traced syscall is allowed");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "TRACED BUT NOT ALLOWED (add to crates/cliproxy-container/src/syscalls.rs with a reason, then regenerate deploy/seccomp-profile.json): {missing:?}"
    );
    Ok(if args.check { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Calls made only before the sandbox is applied or by the wrapper itself.
fn ignored(name: &str) -> bool {
    // execve starts the server (before the filter); seccomp installs the filter; the others
    // are denied on purpose (see `DENIED_ON_PURPOSE`).
    matches!(name, "execve" | "seccomp")
        || cliproxy_container::syscalls::DENIED_ON_PURPOSE.iter().any(|s| s.name == name)
}

fn allowed_here() -> BTreeSet<&'static str> {
    let x86_64 = cfg!(target_arch = "x86_64");
    cliproxy_container::syscalls::COMMON
        .iter()
        .chain(cliproxy_container::syscalls::X86_64_ONLY.iter().filter(|_| x86_64))
        .map(|s| s.name)
        .collect()
}

/// The syscall names in every `trace.*` file of `dir` (strace's `name(args) = ret` lines).
fn traced_syscalls(dir: &Path) -> Result<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if !path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("trace.")) {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        names.extend(text.lines().filter_map(syscall_of));
    }
    Ok(names)
}

/// `1234  openat(AT_FDCWD, ...) = 3` → `openat`; resumed, signal and exit lines → `None`.
fn syscall_of(line: &str) -> Option<String> {
    let line = line.trim_start();
    let line = line.trim_start_matches(|c: char| c.is_ascii_digit()).trim_start();
    let name: String = line
        .chars()
        .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
        .collect();
    (!name.is_empty() && line[name.len()..].starts_with('(')).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strace_lines_are_read() {
        assert_eq!(
            syscall_of("1234  openat(AT_FDCWD, \"/x\", O_RDONLY) = 3").as_deref(),
            Some("openat")
        );
        assert_eq!(syscall_of("epoll_wait(3, [], 1024, 0) = 0").as_deref(), Some("epoll_wait"));
        assert_eq!(syscall_of("1234  <... futex resumed>) = 0"), None);
        assert_eq!(syscall_of("1234  --- SIGTERM {si_signo=SIGTERM} ---"), None);
        assert_eq!(syscall_of("1234  +++ exited with 0 +++"), None);
        assert_eq!(syscall_of("clone3({flags=CLONE_VM}, 88) = 5").as_deref(), Some("clone3"));
    }
}
