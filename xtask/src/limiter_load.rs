//! `cargo xtask limiter-load [--addresses N]`: the per-IP limiter under a spray of distinct
//! client addresses (issue 9, item 5b) at full size. Builds the gateway in release mode and
//! runs the e2e test `load::a_spray_of_client_addresses_through_a_trusted_proxy` (release
//! build too) with `CLIPROXY_LIMITER_ADDRESSES=N` (default 1,000,000); the test prints its
//! figures (`FIGURES ...`) and writes them to the test report when `CLIPROXY_TEST_REPORT` is
//! set. The debug-build default of the test is a smaller spray that fits a CI minute.

use std::process::{Command, ExitCode};

use anyhow::{Context, Result};

/// Arguments of `cargo xtask limiter-load`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// How many distinct client addresses to send (half IPv4, half IPv6 /64s).
    #[arg(long, default_value_t = 1_000_000)]
    addresses: u64,
}

/// Builds and runs the spray; the exit status is the test's.
pub(crate) fn run(args: Args) -> Result<ExitCode> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let build = ["build", "--release", "--locked", "-p", "cliproxy-server"];
    eprintln!("xtask: cargo {}", build.join(" "));
    let status = Command::new(&cargo).args(build).status().context("cannot run cargo build")?;
    if !status.success() {
        return Ok(ExitCode::FAILURE);
    }
    let test = [
        "test",
        "--release",
        "--locked",
        "-p",
        "cliproxy-e2e",
        "--test",
        "e2e",
        "load::a_spray_of_client_addresses_through_a_trusted_proxy",
        "--",
        "--exact",
        "--nocapture",
    ];
    eprintln!("xtask: CLIPROXY_LIMITER_ADDRESSES={} cargo {}", args.addresses, test.join(" "));
    let status = Command::new(&cargo)
        .args(test)
        .env("CLIPROXY_LIMITER_ADDRESSES", args.addresses.to_string())
        .status()
        .context("cannot run cargo test")?;
    Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
