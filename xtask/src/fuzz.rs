//! `cargo xtask fuzz [--seconds N] [TARGET...]`: runs the `fuzz/` targets with
//! `cargo +nightly fuzz`, each for a bounded time. Crash inputs kept under
//! `fuzz/regressions/<target>/` are replayed first, so a fixed crash stays fixed; a new crash
//! fails the run and names the artefact libFuzzer wrote (`fuzz/artifacts/<target>/`), which is
//! to be copied into `fuzz/regressions/<target>/` with the fix.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

/// Arguments of `cargo xtask fuzz`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// How long each target runs (libFuzzer's -max_total_time).
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// The targets to run (default: every file in fuzz/fuzz_targets).
    targets: Vec<String>,
}

/// Every target: the file stems in `fuzz/fuzz_targets`.
fn all_targets(fuzz: &Path) -> Result<Vec<String>> {
    let dir = fuzz.join("fuzz_targets");
    let mut targets: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|entry| entry.ok()?.path().file_stem()?.to_str().map(str::to_owned))
        .collect();
    targets.sort();
    Ok(targets)
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|f| f.is_file());
    files.sort();
    files
}

/// Runs the targets; exit 1 on the first crash.
pub(crate) fn run(args: Args) -> Result<ExitCode> {
    let fuzz = Path::new("fuzz");
    let nightly = Command::new("cargo").args(["+nightly", "fuzz", "--version"]).output();
    if !nightly.is_ok_and(|o| o.status.success()) {
        bail!(
            "cargo +nightly fuzz is not available: install the nightly toolchain (rustup toolchain install nightly) and cargo-fuzz (cargo install --locked cargo-fuzz)"
        );
    }
    let known = all_targets(fuzz)?;
    let targets = if args.targets.is_empty() { known.clone() } else { args.targets.clone() };
    if let Some(unknown) = targets.iter().find(|t| !known.contains(t)) {
        bail!("no fuzz target {unknown}; the targets are: {}", known.join(", "));
    }
    let mut summary = Vec::new();
    for target in &targets {
        let regressions = files_in(&fuzz.join("regressions").join(target));
        if !regressions.is_empty() {
            eprintln!("xtask: fuzz {target}: replaying {} kept crash input(s)", regressions.len());
            let status = Command::new("cargo")
                .current_dir(fuzz)
                .args(["+nightly", "fuzz", "run", target])
                .args(regressions.iter().map(|f| Path::new("..").join(f)))
                .status()
                .context("cannot run cargo fuzz")?;
            if !status.success() {
                eprintln!("xtask: fuzz {target}: a kept crash input crashes again");
                return Ok(ExitCode::FAILURE);
            }
        }
        let corpus = fuzz.join("corpus").join(target);
        std::fs::create_dir_all(&corpus)
            .with_context(|| format!("cannot create {}", corpus.display()))?;
        eprintln!("xtask: fuzz {target}: {} s", args.seconds);
        let output = Command::new("cargo")
            .current_dir(fuzz)
            .args(["+nightly", "fuzz", "run", target])
            .arg(Path::new("corpus").join(target))
            .arg("--")
            .arg(format!("-max_total_time={}", args.seconds))
            .output()
            .context("cannot run cargo fuzz")?;
        let log = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            eprintln!("{log}");
            let artefact = log
                .lines()
                .find_map(|l| l.split("Test unit written to ").nth(1))
                .unwrap_or("(see the output above)");
            eprintln!(
                "xtask: fuzz {target}: CRASH, input in fuzz/{artefact}; fix it and keep the input in fuzz/regressions/{target}/"
            );
            return Ok(ExitCode::FAILURE);
        }
        let runs = log
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("Done ").and_then(|r| r.split(' ').next()))
            .unwrap_or("?")
            .to_owned();
        summary.push(format!("{target}: {runs} runs in {} s, no crash", args.seconds));
    }
    for line in &summary {
        eprintln!("xtask: fuzz {line}");
    }
    Ok(ExitCode::SUCCESS)
}
