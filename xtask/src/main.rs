//! Project automation: `cargo xtask <task>`.
//!
//! - `ci`: everything `.ci/run` checks, in the same order: `lint`, then `test`.
//! - `lint`: rustfmt check, clippy with warnings denied (the workspace and the `fuzz/` crate,
//!   so fuzz targets do not rot), and `cargo deny` (licences, banned crates such as aws-lc-rs
//!   and openssl, sources).
//! - `test`: the workspace tests (the command README.md gives).
//! - `guard`, `secrets`, `hooks`, `release`: the code-integrity checks of
//!   `cliproxy-integrity` (path guard, secret scanning, signed releases).
//! - `syscalls`: traces the server under the end-to-end suite and checks the sandbox's
//!   syscall allowlist against what it really calls.
//! - `fuzz`: every `fuzz/` target for a bounded time with `cargo +nightly fuzz`, starting
//!   from its seeds in `fuzz/seeds/`, after replaying those seeds and the crash inputs kept in
//!   `fuzz/regressions/`.
//! - `limiter-load`: the per-IP limiter under 1,000,000 distinct client addresses named by a
//!   trusted proxy (release build; the e2e test `a_spray_of_client_addresses_...`).
//! - `bench`: the performance harness (`bench/`, crate `cliproxy-bench`): release build, the
//!   scenarios of docs/performance.md, `target/bench/report.md` and `report.json`.
//! - `crash`: the crash-consistency end-to-end test with more SIGKILL rounds
//!   (`--iterations`, `--seed`).
//! - `test-report`: the reliability and security proof (workspace tests with the figures
//!   they record, every fuzz target) rendered into `docs/security/test-report.md`; with
//!   `--render-only --dir`, rendered from a run made elsewhere (`.ci/run`'s own steps).

mod bench;
mod crash;
mod fuzz;
mod guard;
mod limiter_load;
mod release;
mod secrets;
mod syscalls;
mod test_report;

use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "cliproxy project automation")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Run lint then test: what CI runs.
    Ci,
    /// rustfmt --check, clippy -D warnings, cargo deny check.
    Lint,
    /// The workspace tests.
    Test,
    /// Path guard: check the commits in a range against the protected-path policy.
    Guard(guard::Args),
    /// Secret scanning of the staged changes, the tree or the history.
    Secrets(secrets::Args),
    /// Git hooks (`hooks install`: a pre-commit hook running the staged secret scan).
    Hooks(secrets::HooksArgs),
    /// Release artefacts: build, sign (SHA256SUMS + minisign signature), verify.
    Release(release::Args),
    /// Trace the server under the end-to-end suite with strace and compare its syscalls with
    /// the sandbox allowlist.
    Syscalls(syscalls::Args),
    /// Benchmark the release gateway against a mock upstream, direct vs through the gateway;
    /// writes target/bench/report.md and report.json.
    Bench(bench::Args),
    /// Run each fuzz target for a bounded time (cargo +nightly fuzz) from its seeds in
    /// fuzz/seeds, after replaying those seeds and the kept crash inputs in fuzz/regressions.
    Fuzz(fuzz::Args),
    /// Runs the reliability and security proof (workspace tests and fuzzing) and writes
    /// docs/security/test-report.md from the figures the tests record.
    TestReport(test_report::Args),
    /// Kill the gateway with SIGKILL at random moments during credential writes, quota
    /// updates and audit writes, and check what it left (the crash-consistency e2e test).
    Crash(crash::Args),
    /// Spray the release gateway's per-IP limiter with 1,000,000 distinct client addresses
    /// through a trusted proxy header and check its memory stays bounded.
    LimiterLoad(limiter_load::Args),
}

/// The test command; README.md gives the same one.
const TEST: &[&str] = &["test", "--workspace", "--locked"];

fn main() -> Result<ExitCode> {
    match Cli::parse().task {
        Task::Ci => {
            lint()?;
            cargo(TEST)?;
        }
        Task::Lint => lint()?,
        Task::Test => cargo(TEST)?,
        Task::Guard(args) => return guard::run(args),
        Task::Secrets(args) => return secrets::run(args),
        Task::Hooks(args) => return secrets::hooks(args),
        Task::Release(args) => return release::run(args),
        Task::Syscalls(args) => return syscalls::run(args),
        Task::Bench(args) => return bench::run(args),
        Task::Fuzz(args) => return fuzz::run(args),
        Task::TestReport(args) => return test_report::run(args),
        Task::Crash(args) => return crash::run(args),
        Task::LimiterLoad(args) => return limiter_load::run(args),
    }
    Ok(ExitCode::SUCCESS)
}

fn lint() -> Result<()> {
    cargo(&["fmt", "--all", "--", "--check"])?;
    cargo(&["clippy", "--workspace", "--all-targets", "--locked", "--", "-D", "warnings"])?;
    cargo(&["fmt", "--manifest-path", "fuzz/Cargo.toml", "--all", "--", "--check"])?;
    cargo(&["clippy", "--manifest-path", "fuzz/Cargo.toml", "--locked", "--", "-D", "warnings"])?;
    cargo(&["deny", "--locked", "check", "licenses", "bans", "sources"])
}

fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    eprintln!("xtask: cargo {}", args.join(" "));
    let status = Command::new(&cargo)
        .args(args)
        .status()
        .with_context(|| format!("cannot run `{cargo} {}`", args.join(" ")))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}
