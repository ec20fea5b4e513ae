//! The sandbox really denies: each scenario runs in a child process (this test binary run
//! again with `CLIPROXY_SANDBOX_SCENARIO` set), which applies the full sandbox and then tries
//! something forbidden. The parent checks how the child ended.
//!
//! Built without libtest's harness (`harness = false`): libtest runs each test on a thread of
//! its own, and the sandbox must be applied while the process has only one thread.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output};

use cliproxy_container::sandbox::{self, Landlock, Paths};
use cliproxy_container::{Config, Error, posture::Posture};

const SCENARIO: &str = "CLIPROXY_SANDBOX_SCENARIO";
const DIR: &str = "CLIPROXY_SANDBOX_DIR";

fn main() {
    if let Ok(scenario) = std::env::var(SCENARIO) {
        child(&scenario);
        return;
    }
    let tests: [(&str, fn()); 5] = [
        ("execve_is_denied_after_start", execve_is_denied_after_start),
        ("ptrace_kills_the_process", ptrace_kills_the_process),
        (
            "files_outside_the_allowed_paths_are_refused_where_landlock_exists",
            files_outside_the_allowed_paths_are_refused_where_landlock_exists,
        ),
        ("landlock_is_refused_once_other_threads_run", landlock_is_refused_once_other_threads_run),
        ("seccomp_covers_threads_started_before_it", seccomp_covers_threads_started_before_it),
    ];
    let filter: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    for (name, test) in tests {
        if filter.iter().all(|f| name.contains(f.as_str())) {
            println!("test {name} ...");
            test();
            println!("test {name} ... ok");
        }
    }
}

/// Runs `scenario` in a sandboxed child; the child is this binary run again.
fn run(scenario: &str, dir: &Path) -> Output {
    Command::new(std::env::current_exe().unwrap())
        .env(SCENARIO, scenario)
        .env(DIR, dir)
        .output()
        .unwrap()
}

fn config() -> Config {
    Config { require_non_root: false, ..Config::default() }
}

/// The child side: sandbox, then the forbidden act. Prints `RESULT <what happened>`.
fn child(scenario: &str) {
    let dir = std::path::PathBuf::from(std::env::var(DIR).unwrap());
    let allowed = dir.join("allowed");
    std::fs::create_dir_all(&allowed).unwrap();
    let outside = dir.join("outside.txt");
    std::fs::write(&outside, "secret").unwrap();
    let paths = Paths { read_only: Vec::new(), read_write: vec![allowed.clone()] };
    match scenario {
        "threads" => {
            let (_keep, parked) = std::sync::mpsc::channel::<()>();
            let thread = std::thread::spawn(move || parked.recv());
            match sandbox::apply(&config(), &paths) {
                Ok(applied) => println!("RESULT applied {applied:?}"),
                Err(Error::ThreadsRunning(n)) => println!("RESULT refused: {n} threads"),
                Err(other) => println!("RESULT other error: {other}"),
            }
            drop(_keep);
            let _ = thread.join();
            return;
        }
        "seccomp-threads" => {
            let (tid_tx, tid_rx) = std::sync::mpsc::channel();
            let (_keep, parked) = std::sync::mpsc::channel::<()>();
            let thread = std::thread::spawn(move || {
                tid_tx.send(nix::unistd::gettid()).unwrap();
                parked.recv()
            });
            let tid = tid_rx.recv().unwrap();
            let config = Config { landlock: false, ..config() };
            let applied = sandbox::apply(&config, &paths).unwrap();
            let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap();
            let other = Posture::parse(&status, "");
            println!(
                "RESULT seccomp={} other thread: seccomp={} filters={}",
                applied.seccomp, other.seccomp, other.seccomp_filters
            );
            drop(_keep);
            let _ = thread.join();
            return;
        }
        _ => {}
    }
    let applied = sandbox::apply(&config(), &paths).unwrap();
    println!("LANDLOCK {:?}", applied.landlock);
    let posture = Posture::read().unwrap();
    println!(
        "POSTURE seccomp={} filters={} nnp={}",
        posture.seccomp, posture.seccomp_filters, posture.no_new_privs
    );
    match scenario {
        "exec" => match Command::new("/bin/true").status() {
            Ok(status) => println!("RESULT exec ran: {status}"),
            Err(error) => println!("RESULT exec refused: {:?}", error.raw_os_error()),
        },
        "open-outside" => match std::fs::read_to_string(&outside) {
            Ok(_) => println!("RESULT read outside"),
            Err(error) => println!("RESULT open refused: {:?}", error.raw_os_error()),
        },
        "write-allowed" => {
            std::fs::write(allowed.join("f"), "ok").unwrap();
            println!("RESULT wrote {}", std::fs::read_to_string(allowed.join("f")).unwrap());
        }
        "ptrace" => {
            let target = nix::unistd::Pid::from_raw(i32::try_from(std::process::id()).unwrap());
            println!("RESULT ptrace returned {:?}", nix::sys::ptrace::attach(target));
        }
        other => panic!("unknown scenario {other}"),
    }
}

fn result(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout.lines().find_map(|l| l.split("RESULT ").nth(1)).unwrap_or("").to_owned()
}

fn landlock(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout.lines().find_map(|l| l.split("LANDLOCK ").nth(1)).unwrap_or("").to_owned()
}

fn execve_is_denied_after_start() {
    let dir = tempfile::tempdir().unwrap();
    let output = run("exec", dir.path());
    assert!(output.status.success(), "{output:?}");
    assert_eq!(result(&output), format!("exec refused: Some({})", libc::EPERM), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("POSTURE seccomp=filter filters=2 nnp=true"), "{stdout}");
}

fn ptrace_kills_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let output = run("ptrace", dir.path());
    assert_eq!(output.status.signal(), Some(libc::SIGSYS), "{output:?}");
    assert_eq!(result(&output), "", "the child must not get past ptrace");
}

fn files_outside_the_allowed_paths_are_refused_where_landlock_exists() {
    let dir = tempfile::tempdir().unwrap();
    let output = run("open-outside", dir.path());
    assert!(output.status.success(), "{output:?}");
    match landlock(&output).as_str() {
        "Enforced" | "Partial" => {
            assert_eq!(result(&output), format!("open refused: Some({})", libc::EACCES));
        }
        // Reported, never silent: the posture says landlock is not enforced.
        "Unsupported" => assert_eq!(result(&output), "read outside"),
        other => panic!("unexpected landlock status {other:?}: {output:?}"),
    }
    let output = run("write-allowed", dir.path());
    assert_eq!(result(&output), "wrote ok", "{output:?}");
    assert_ne!(landlock(&output), format!("{:?}", Landlock::Off));
}

/// A thread started before landlock would escape it: `apply` refuses rather than leave one
/// thread outside the file system rules.
fn landlock_is_refused_once_other_threads_run() {
    let dir = tempfile::tempdir().unwrap();
    let output = run("threads", dir.path());
    assert!(output.status.success(), "{output:?}");
    assert_eq!(result(&output), "refused: 2 threads", "{output:?}");
}

/// The seccomp filters are synchronised to every thread (TSYNC), including one started
/// before them.
fn seccomp_covers_threads_started_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let output = run("seccomp-threads", dir.path());
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        result(&output),
        "seccomp=true other thread: seccomp=filter filters=2",
        "{output:?}"
    );
}
