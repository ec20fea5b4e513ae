//! `cargo xtask secrets` (the secret scanner of `cliproxy-integrity`) and `cargo xtask
//! hooks install` (a pre-commit hook running the staged scan).
//!
//! Exit codes of `secrets`: 0 when clean, 1 when a secret is found, 2 when the scan could
//! not run (unreadable allowlist, git failing).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use cliproxy_integrity::SecretsConfig;
use cliproxy_integrity::secrets::{self, HookInstall, Mode};

use crate::guard::repo_root;

/// What the pre-commit hook runs.
const HOOK_COMMAND: &str = "cargo xtask secrets --staged";

/// Options of `cargo xtask secrets`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("mode").required(true).args(["staged", "all", "history"])))]
pub(crate) struct Args {
    /// Scan the lines the staged changes add (what the pre-commit hook runs).
    #[arg(long)]
    staged: bool,
    /// Scan every tracked file in the work tree (what CI runs).
    #[arg(long)]
    all: bool,
    /// Scan every line added by every commit reachable from HEAD.
    #[arg(long)]
    history: bool,
    /// The allowlist [default: integrity/secrets-allowlist.toml in the repository].
    #[arg(long, value_name = "PATH")]
    allowlist: Option<PathBuf>,
}

/// Options of `cargo xtask hooks`.
#[derive(Debug, clap::Args)]
pub(crate) struct HooksArgs {
    #[command(subcommand)]
    action: HooksAction,
}

#[derive(Debug, clap::Subcommand)]
enum HooksAction {
    /// Write .git/hooks/pre-commit (or core.hooksPath's) running `cargo xtask secrets --staged`.
    Install {
        /// Replace a different existing pre-commit hook.
        #[arg(long)]
        force: bool,
    },
}

pub(crate) fn run(args: Args) -> Result<ExitCode> {
    match scan(&args) {
        Ok(true) => Ok(ExitCode::SUCCESS),
        Ok(false) => Ok(ExitCode::from(1)),
        Err(e) => {
            eprintln!("xtask secrets: error: {e:#}");
            Ok(ExitCode::from(2))
        }
    }
}

fn scan(args: &Args) -> Result<bool> {
    let root = repo_root()?;
    let mode = if args.staged {
        Mode::Staged
    } else if args.history {
        Mode::History
    } else {
        Mode::All
    };
    // The section's default allowlist is relative to the repository and may be missing (then
    // nothing is allowed); an `--allowlist` given on the command line is relative to the
    // working directory and must exist.
    let mut config = SecretsConfig::default();
    let default_allowlist = config.allowlist.clone();
    config.mode = mode;
    if let Some(path) = &args.allowlist {
        config.allowlist = std::path::absolute(path)
            .with_context(|| format!("cannot resolve {}", path.display()))?;
        config.allowlist_required = true;
    }
    let report = config.build(&root)?.report()?;
    println!("{report}");
    if !report.is_clean() {
        println!(
            "remove the secret (and rotate it if it was ever pushed), or, for a test fixture, add its fingerprint or path to {}; see docs/security/secret-scanning.md",
            default_allowlist.display()
        );
    }
    Ok(report.is_clean())
}

pub(crate) fn hooks(args: HooksArgs) -> Result<ExitCode> {
    let HooksAction::Install { force } = args.action;
    match install(force) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("xtask hooks: error: {e:#}");
            Ok(ExitCode::from(2))
        }
    }
}

fn install(force: bool) -> Result<()> {
    let root = repo_root()?;
    match secrets::install_pre_commit_hook(&root, HOOK_COMMAND, force)? {
        HookInstall::Installed(path) => println!("installed {}", path.display()),
        HookInstall::Replaced(path) => println!("replaced {}", path.display()),
        HookInstall::AlreadyInstalled(path) => println!("already installed: {}", path.display()),
        other => println!("{other:?}"),
    }
    Ok(())
}
