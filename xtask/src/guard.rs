//! `cargo xtask guard` (being written).

use std::process::ExitCode;

use anyhow::Result;

/// Options of `cargo xtask guard`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

pub(crate) fn run(_args: Args) -> Result<ExitCode> {
    anyhow::bail!("not built yet")
}
