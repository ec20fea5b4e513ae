//! `cargo xtask crash [--iterations N] [--seed S] [--release]`: the crash-consistency test
//! (`tests/e2e/crash.rs`) with more kills than CI runs. It builds the server, then runs that
//! one test with `CLIPROXY_CRASH_ITERATIONS` and `CLIPROXY_CRASH_SEED` set; a failure prints
//! the seed that replays it.

use std::process::{Command, ExitCode};

use anyhow::{Context, Result};

/// Arguments of `cargo xtask crash`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// How many times the gateway is killed (CI runs 200).
    #[arg(long, default_value_t = 1000)]
    iterations: u64,
    /// The seed of the kill points (default: from the clock; the test prints it).
    #[arg(long)]
    seed: Option<u64>,
    /// Build and test in release mode (debug by default).
    #[arg(long)]
    release: bool,
}

/// Builds the server and runs the crash test.
pub(crate) fn run(args: Args) -> Result<ExitCode> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let profile: &[&str] = if args.release { &["--release"] } else { &[] };
    // The e2e suite runs the binary built next to it; build it first.
    let status = Command::new(&cargo)
        .args(["build", "--locked", "-p", "cliproxy-server"])
        .args(profile)
        .status()
        .with_context(|| format!("cannot run `{cargo} build`"))?;
    if !status.success() {
        eprintln!("xtask: crash: building cliproxy-server failed ({status})");
        return Ok(ExitCode::FAILURE);
    }
    let mut test = Command::new(&cargo);
    test.args(["test", "--locked", "-p", "cliproxy-e2e", "--test", "e2e"])
        .args(profile)
        .args([
            "--",
            "--exact",
            "crash::sigkill_at_random_moments_loses_nothing_acknowledged",
            "--nocapture",
        ])
        .env("CLIPROXY_CRASH_ITERATIONS", args.iterations.to_string());
    if let Some(seed) = args.seed {
        test.env("CLIPROXY_CRASH_SEED", seed.to_string());
    }
    eprintln!(
        "xtask: crash: {} kills{}",
        args.iterations,
        args.seed.map(|s| format!(", seed {s}")).unwrap_or_default()
    );
    let status = test.status().with_context(|| format!("cannot run `{cargo} test`"))?;
    if status.success() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("xtask: crash: the test failed ({status}); its output names the seed to replay");
        Ok(ExitCode::FAILURE)
    }
}
