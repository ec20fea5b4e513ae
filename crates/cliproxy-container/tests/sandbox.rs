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

type Test = (&'static str, fn());

const TESTS: [Test; 7] = [
    ("execve_is_denied_after_start", execve_is_denied_after_start),
    ("ptrace_kills_the_process", ptrace_kills_the_process),
    (
        "files_outside_the_allowed_paths_are_refused_where_landlock_exists",
        files_outside_the_allowed_paths_are_refused_where_landlock_exists,
    ),
    ("landlock_is_refused_once_other_threads_run", landlock_is_refused_once_other_threads_run),
    ("seccomp_covers_threads_started_before_it", seccomp_covers_threads_started_before_it),
    (
        "memory_is_protected_early_released_on_request_and_sealed_by_apply",
        memory_is_protected_early_released_on_request_and_sealed_by_apply,
    ),
    (
        "this_binary_lists_every_test_and_refuses_unknown_options",
        this_binary_lists_every_test_and_refuses_unknown_options,
    ),
];

fn main() -> std::process::ExitCode {
    if let Ok(scenario) = std::env::var(SCENARIO) {
        child(&scenario);
        return std::process::ExitCode::SUCCESS;
    }
    // Checked before the command line is read, on every run: a parser that took an option's
    // value for a filter would otherwise select no test, this check included, and pass.
    the_harness_reads_its_arguments_like_libtest();
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(error) => {
            // libtest also refuses what it does not know, with status 101; an argument
            // taken for a filter would run nothing and pass.
            eprintln!("error: {error}");
            return std::process::ExitCode::from(101);
        }
    };
    let selected: Vec<&Test> = TESTS.iter().filter(|(name, _)| args.selects(name)).collect();
    if args.list {
        for (name, _) in &selected {
            println!("{name}: test");
        }
        if !args.terse {
            println!("\n{} tests, 0 benchmarks", selected.len());
        }
        return std::process::ExitCode::SUCCESS;
    }
    // One test at a time whatever `--test-threads` says: each runs its scenarios in child
    // processes, and this process stays single-threaded as the sandbox needs in the child.
    println!("\nrunning {} tests", selected.len());
    for (name, test) in &selected {
        println!("test {name} ...");
        test();
        println!("test {name} ... ok");
    }
    println!(
        "\ntest result: ok. {} passed; 0 failed; 0 ignored; 0 measured; {} filtered out\n",
        selected.len(),
        TESTS.len() - selected.len()
    );
    std::process::ExitCode::SUCCESS
}

/// The command line as libtest reads it (`cargo test -- <args>` hands it to this binary
/// too): filters (a test runs when its name contains any of them, or equals one with
/// `--exact`), `--skip` filters, and libtest's other options, those that take a value
/// consuming it. Options that change nothing here (`--test-threads`, `--nocapture`, output
/// format and colour) are accepted; unknown ones are refused, as libtest refuses them.
#[derive(Debug, Default, PartialEq, Eq)]
struct Args {
    filters: Vec<String>,
    skip: Vec<String>,
    exact: bool,
    list: bool,
    terse: bool,
    /// `--ignored` or `--bench`: only ignored tests or benchmarks, of which there are none.
    none: bool,
}

impl Args {
    fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        // libtest's options that take a value (`--name value` or `--name=value`).
        const WITH_VALUE: [&str; 7] = [
            "--test-threads",
            "--skip",
            "--color",
            "--format",
            "--logfile",
            "--shuffle-seed",
            "-Z",
        ];
        const FLAGS: [&str; 17] = [
            "--exact",
            "--list",
            "--ignored",
            "--include-ignored",
            "--bench",
            "--test",
            "--nocapture",
            "--no-capture",
            "--show-output",
            "--quiet",
            "-q",
            "--force-run-in-process",
            "--exclude-should-panic",
            "--ensure-time",
            "--shuffle",
            "--fail-fast",
            "--report-time",
        ];
        let mut parsed = Self::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            if !arg.starts_with('-') {
                parsed.filters.push(arg);
                continue;
            }
            let (name, inline) = match arg.split_once('=') {
                Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
                None => (arg.clone(), None),
            };
            if WITH_VALUE.contains(&name.as_str()) {
                let value = match inline {
                    Some(value) => value,
                    None => args.next().ok_or_else(|| format!("{name} needs a value"))?,
                };
                match name.as_str() {
                    "--skip" => parsed.skip.push(value),
                    "--test-threads" if value.parse::<std::num::NonZeroUsize>().is_err() => {
                        return Err(format!("--test-threads: {value:?} is not a positive number"));
                    }
                    "--format" => parsed.terse = value == "terse",
                    _ => {}
                }
            } else if FLAGS.contains(&name.as_str()) {
                if inline.is_some() {
                    return Err(format!("{name} takes no value"));
                }
                match name.as_str() {
                    "--exact" => parsed.exact = true,
                    "--list" => parsed.list = true,
                    "--ignored" | "--bench" => parsed.none = true,
                    _ => {}
                }
            } else {
                return Err(format!("unrecognised option {arg:?}"));
            }
        }
        Ok(parsed)
    }

    fn selects(&self, name: &str) -> bool {
        let matches = |filter: &String| {
            if self.exact { name == filter } else { name.contains(filter.as_str()) }
        };
        !self.none
            && (self.filters.is_empty() || self.filters.iter().any(matches))
            && !self.skip.iter().any(matches)
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
        "memory" => {
            let state = || {
                let (soft, hard) = sandbox::core_limits().unwrap();
                format!("dumpable={} core={soft}/{hard}", sandbox::is_dumpable().unwrap())
            };
            let before = state();
            let early = sandbox::protect_memory().unwrap();
            let protected = state();
            early.undo().unwrap();
            let released = state();
            let _early = sandbox::protect_memory().unwrap();
            let config = Config { landlock: false, seccomp: false, ..config() };
            let applied = sandbox::apply(&config, &paths).unwrap();
            println!(
                "RESULT before: {before}; early: {protected}; undone: {released}; applied ({}): {}",
                applied.protect_memory,
                state()
            );
            return;
        }
        _ => {}
    }
    // Through the trait, as a program holds it.
    let sandbox = config().build();
    let applied = sandbox.apply(&paths).unwrap();
    println!("LANDLOCK {:?}", applied.landlock);
    let posture = sandbox.posture().unwrap();
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

/// `sandbox.protect_memory`: the early half makes the process non-dumpable with a core file
/// soft limit of 0 and keeps the hard limit, so that undoing it gives back exactly what was
/// there; `apply` then seals it, the hard limit included.
fn memory_is_protected_early_released_on_request_and_sealed_by_apply() {
    let dir = tempfile::tempdir().unwrap();
    // A known starting point that differs from every protected state: soft 4096, hard 8192,
    // set by util-linux's `prlimit` before it runs the child.
    let output = Command::new("prlimit")
        .arg("--core=4096:8192")
        .arg(std::env::current_exe().unwrap())
        .env(SCENARIO, "memory")
        .env(DIR, dir.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        result(&output),
        "before: dumpable=true core=4096/8192; early: dumpable=false core=0/8192; \
         undone: dumpable=true core=4096/8192; applied (true): dumpable=false core=0/0",
        "{output:?}"
    );
}

/// `cargo test -- --test-threads 2` once ran none of these tests and passed: every argument
/// without a dash was taken for a name filter. Checks the parser on libtest's own command
/// lines; `main` runs it first on every run, whatever the filters.
fn the_harness_reads_its_arguments_like_libtest() {
    let selected = |args: &[&str]| -> Result<Vec<&str>, String> {
        let args = Args::parse(args.iter().map(|a| (*a).to_owned()))?;
        Ok(TESTS.iter().map(|(name, _)| *name).filter(|name| args.selects(name)).collect())
    };
    let all: Vec<&str> = TESTS.iter().map(|(name, _)| *name).collect();
    for args in [
        &[][..],
        &["--test-threads", "2"],
        &["--test-threads=2"],
        &["--nocapture", "--test-threads", "1", "--color", "never", "-q"],
        &["--format", "pretty", "--show-output"],
    ] {
        assert_eq!(selected(args), Ok(all.clone()), "{args:?}");
    }
    assert_eq!(selected(&["ptrace", "--test-threads", "2"]), Ok(vec!["ptrace_kills_the_process"]));
    // Filters are alternatives, as in libtest.
    assert_eq!(
        selected(&["ptrace", "execve"]),
        Ok(vec!["execve_is_denied_after_start", "ptrace_kills_the_process"])
    );
    assert_eq!(selected(&["--exact", "ptrace"]), Ok(vec![]));
    assert_eq!(
        selected(&["--exact", "ptrace_kills_the_process"]),
        Ok(vec!["ptrace_kills_the_process"])
    );
    assert_eq!(selected(&["--skip", "seccomp"]).map(|s| s.len()), Ok(all.len() - 1));
    assert_eq!(
        selected(&["--skip=landlock", "--skip", "seccomp"]).map(|s| s.len()),
        Ok(all.len() - 3)
    );
    assert_eq!(selected(&["--ignored"]), Ok(vec![]));
    assert!(selected(&["--test-threads"]).is_err());
    assert!(selected(&["--test-threads", "two"]).is_err());
    assert!(selected(&["--no-such-option"]).is_err());
}

/// This binary end to end: `--test-threads 2 --list` lists every test, and an unknown option
/// fails with libtest's status.
fn this_binary_lists_every_test_and_refuses_unknown_options() {
    let all: Vec<&str> = TESTS.iter().map(|(name, _)| *name).collect();
    let exe = std::env::current_exe().unwrap();
    let listed = Command::new(&exe).args(["--test-threads", "2", "--list"]).output().unwrap();
    assert!(listed.status.success(), "{listed:?}");
    let stdout = String::from_utf8_lossy(&listed.stdout);
    for name in &all {
        assert!(stdout.contains(&format!("{name}: test")), "{name} not listed: {stdout}");
    }
    assert!(stdout.contains(&format!("{} tests, 0 benchmarks", all.len())), "{stdout}");
    let refused = Command::new(&exe).arg("--no-such-option").output().unwrap();
    assert_eq!(refused.status.code(), Some(101), "{refused:?}");
}
