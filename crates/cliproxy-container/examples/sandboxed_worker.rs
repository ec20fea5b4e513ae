//! A worker that locks itself in before it touches its data: the supervisor half (this
//! program run without arguments) prepares three directories and starts the worker half (this
//! program run again with them), which applies the sandbox and shows what it may and may not
//! do. The supervisor then checks the worker's work from outside the sandbox and cleans up:
//! once sandboxed, the worker itself could not remove directories it is not allowed to write.
//!
//! The sandbox is the default one (seccomp, `no_new_privs`, memory protection, landlock)
//! except the root check, so that it runs as root in CI as well:
//!
//! - `input/` is read-only: the worker reads its job there and cannot write;
//! - `work/` is read-write: the worker writes its result there;
//! - `outside/`, created before the sandbox like the others but not listed, cannot be written.
//!
//! Where the kernel has no landlock, the worker says so and the writes it cannot stop are
//! allowed; the example then passes only because [`Applied::landlock`] reports it as
//! unsupported, never by pretending.
//!
//! Run it with `cargo run -p cliproxy-container --example sandboxed_worker`; it exits 0 when
//! everything it shows held.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "an example")]

use std::path::{Path, PathBuf};
use std::process::Command;

use cliproxy_container::{Applied, Config, Landlock, Paths, ProcessSandbox, Sandbox};

const JOB: &str = "count the words in this sentence";

fn main() {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    match args.as_slice() {
        [] => supervisor(),
        [input, work, outside] => worker(input, work, outside),
        _ => panic!("usage: sandboxed_worker [INPUT WORK OUTSIDE]"),
    }
}

/// Prepares the directories, runs the worker and checks what it left behind.
fn supervisor() {
    let base = tempfile::tempdir().unwrap();
    let (input, work, outside) =
        (base.path().join("input"), base.path().join("work"), base.path().join("outside"));
    for dir in [&input, &work, &outside] {
        std::fs::create_dir(dir).unwrap();
    }
    std::fs::write(input.join("job.txt"), JOB).unwrap();

    let output = Command::new(std::env::current_exe().unwrap())
        .args([&input, &work, &outside])
        .output()
        .unwrap();
    print!("{}", String::from_utf8_lossy(&output.stdout));
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the worker failed: {}", output.status);

    // Seen from outside the sandbox: the result is where the worker was allowed to write.
    let result = std::fs::read_to_string(work.join("result.txt")).unwrap();
    assert_eq!(result, JOB.split_whitespace().count().to_string());
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !stdout.contains("landlock: unsupported") {
        assert!(!outside.join("escaped.txt").exists(), "the worker wrote outside its directory");
        assert!(!input.join("escaped.txt").exists(), "the worker wrote into its input");
    }
    println!("supervisor: the worker's result is {result}; nothing was written elsewhere");
}

/// Applies the sandbox, then works and tries what it must not do.
fn worker(input: &Path, work: &Path, outside: &Path) {
    let sandbox = ProcessSandbox::new(Config { require_non_root: false, ..Config::default() });
    // First thing, while `main` is this process's only thread: landlock covers only the
    // threads started after it, and `apply` refuses to run when others exist.
    let applied = sandbox
        .apply(&Paths { read_only: vec![input.to_owned()], read_write: vec![work.to_owned()] })
        .expect("cannot apply the sandbox");
    let posture = sandbox.posture().unwrap();
    println!("worker: posture: {posture}");
    assert!(applied.seccomp && applied.no_new_privs && applied.protect_memory, "{applied:?}");
    assert_eq!(posture.seccomp, "filter");
    assert!(posture.no_new_privs);

    // The job, read from the read-only directory, and its result, written to the read-write
    // one: what the worker is for still works.
    let job = std::fs::read_to_string(input.join("job.txt")).unwrap();
    std::fs::write(work.join("result.txt"), job.split_whitespace().count().to_string()).unwrap();
    println!("worker: wrote {}", work.join("result.txt").display());

    let enforced = enforced(applied);
    for (what, dir) in [("outside directory", outside), ("read-only input", input)] {
        let attempt = std::fs::write(dir.join("escaped.txt"), "should not be here");
        match (enforced, attempt) {
            (true, Err(error)) => {
                assert_eq!(error.raw_os_error(), Some(libc::EACCES), "{what}: {error}");
                println!("worker: writing into the {what} is refused: {error}");
            }
            (true, Ok(())) => panic!("landlock is enforced, yet the {what} was writable"),
            (false, Ok(())) => println!("worker: writing into the {what} succeeded (no landlock)"),
            (false, Err(error)) => {
                panic!("without landlock the {what} should be writable: {error}")
            }
        }
    }
}

/// Whether landlock restricts this process, from what `apply` reported. Anything but
/// "unsupported by this kernel" must be enforced: the example asked for landlock.
fn enforced(applied: Applied) -> bool {
    match applied.landlock {
        Landlock::Enforced | Landlock::Partial => {
            println!("worker: landlock: {}", applied.landlock);
            true
        }
        Landlock::Unsupported => {
            println!(
                "worker: landlock: unsupported by this kernel, so file system access is NOT restricted"
            );
            false
        }
        other => panic!("landlock was asked for and reported {other:?}"),
    }
}
