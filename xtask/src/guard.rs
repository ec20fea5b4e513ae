//! `cargo xtask guard`: the path guard of `cliproxy-integrity` over a range of commits.
//!
//! Exit codes: 0 when no commit breaks the policy (warnings allowed), 1 on a violation, 2
//! when no verdict could be given (unreadable policy, bad revision, git failing).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};
use cliproxy_integrity::PathGuardConfig;

/// Options of `cargo xtask guard`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Check the commits reachable from --head but not from this revision (a pull request's
    /// base branch, `origin/main`, `HEAD~5`).
    #[arg(long, value_name = "REV")]
    base: String,
    /// The last commit to check.
    #[arg(long, value_name = "REV", default_value = "HEAD")]
    head: String,
    /// The policy file [default: integrity/path-guard.toml in the repository].
    #[arg(long, value_name = "PATH")]
    policy: Option<PathBuf>,
}

pub(crate) fn run(args: Args) -> Result<ExitCode> {
    match check(&args) {
        Ok(true) => Ok(ExitCode::SUCCESS),
        Ok(false) => Ok(ExitCode::from(1)),
        Err(e) => {
            eprintln!("xtask guard: error: {e:#}");
            Ok(ExitCode::from(2))
        }
    }
}

fn check(args: &Args) -> Result<bool> {
    let root = repo_root()?;
    // The section's default policy is relative to the repository; a `--policy` given on the
    // command line is relative to the working directory, as a user typing it means.
    let mut config = PathGuardConfig::default();
    let policy_path = match &args.policy {
        Some(path) => path.clone(),
        None => root.join(&config.policy),
    };
    config.policy = std::path::absolute(&policy_path)
        .with_context(|| format!("cannot resolve {}", policy_path.display()))?;
    config.base = Some(args.base.clone());
    config.head = args.head.clone();
    let guard = config.build(&root)?;
    let policy = guard.policy();
    println!(
        "path guard: commits in {}..{} against {} (maintainers: {}; Reviewed-by required from maintainers other than the author: {})",
        args.base,
        args.head,
        policy_path.strip_prefix(&root).unwrap_or(&policy_path).display(),
        policy.maintainers().len(),
        policy.required_reviews(),
    );
    let others = policy.maintainers().len().saturating_sub(1);
    if usize::try_from(policy.required_reviews()).unwrap_or(usize::MAX) > others {
        println!(
            "note: the policy lists {} maintainer(s), so a commit can collect at most {others} review(s) from maintainers other than its author: every commit touching a protected path will fail until more maintainers are added",
            policy.maintainers().len()
        );
    }
    let report = guard.report()?;
    println!("{report}");
    if !report.passed() {
        println!(
            "each commit that touches a protected path needs its author among the maintainers and {} `Reviewed-by: Name <email>` trailer(s) from other maintainers in its last paragraph; see docs/security/path-guard.md",
            policy.required_reviews()
        );
    }
    Ok(report.passed())
}

/// The top level of the git work tree the command runs in.
pub(crate) fn repo_root() -> Result<PathBuf> {
    let out = Command::new("git")
        .args(["rev-parse", "--show-toplevel"])
        .output()
        .context("cannot run git")?;
    if !out.status.success() {
        bail!("not inside a git work tree: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let root = String::from_utf8(out.stdout).context("the repository path is not UTF-8")?;
    Ok(Path::new(root.trim_end_matches(['\n', '\r'])).to_owned())
}
