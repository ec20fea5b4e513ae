//! `cargo xtask secrets` (the secret scanner of `cliproxy-integrity`) and `cargo xtask
//! hooks install` (a pre-commit hook running the staged scan).
//!
//! Exit codes of `secrets`: 0 when clean, 1 when a secret is found, 2 when the scan could
//! not run (unreadable allowlist, git failing).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use cliproxy_integrity::secrets::{self, Allowlist, HookInstall, Mode, Scanner};

use crate::guard::repo_root;

/// The allowlist, relative to the repository top level.
const DEFAULT_ALLOWLIST: &str = "integrity/secrets-allowlist.toml";

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
    let allowlist = match &args.allowlist {
        Some(path) => Allowlist::load(path)?,
        None => {
            let path = root.join(DEFAULT_ALLOWLIST);
            if path.exists() { Allowlist::load(&path)? } else { Allowlist::default() }
        }
    };
    let report = Scanner::new(allowlist)?.scan(&root, mode)?;
    println!("{report}");
    if !report.is_clean() {
        println!(
            "remove the secret (and rotate it if it was ever pushed), or, for a test fixture, add its fingerprint or path to {DEFAULT_ALLOWLIST}; see docs/security/secret-scanning.md"
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
