//! `cargo xtask secrets` and `cargo xtask hooks` (being written).

use std::process::ExitCode;

use anyhow::Result;

/// Options of `cargo xtask secrets`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

/// Options of `cargo xtask hooks`.
#[derive(Debug, clap::Args)]
pub(crate) struct HooksArgs {}

pub(crate) fn run(_args: Args) -> Result<ExitCode> {
    anyhow::bail!("not built yet")
}

pub(crate) fn hooks(_args: HooksArgs) -> Result<ExitCode> {
    anyhow::bail!("not built yet")
}
