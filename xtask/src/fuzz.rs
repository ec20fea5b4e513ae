//! `cargo xtask fuzz [--seconds N] [TARGET...]`: runs the `fuzz/` targets with
//! `cargo +nightly fuzz`, each for a bounded time.
//!
//! Each target has committed inputs in two places, and both are replayed first, one run each:
//! - `fuzz/seeds/<target>/`: small, meaningful inputs in the real formats (made by
//!   `fuzz/seeds/generate.py`), from which every run starts, so that even a 10 s run reaches
//!   deep into the parser;
//! - `fuzz/regressions/<target>/`: inputs that once crashed, so a fixed crash stays fixed.
//!
//! Then libFuzzer runs from the seeds. What it finds goes to a working corpus,
//! `fuzz/corpus/<target>/` (ignored by git, kept between local runs); the seeds directory is
//! passed after it, and libFuzzer only ever writes to the first directory it is given, so the
//! committed seeds are never modified. A new crash fails the run and names the artefact
//! libFuzzer wrote (`fuzz/artifacts/<target>/`), which is to be copied into
//! `fuzz/regressions/<target>/` with the fix.
//!
//! When `CLIPROXY_TEST_REPORT` names a directory, each target that ran clean appends two lines
//! to `<dir>/fuzzing.jsonl`, in the format of the e2e harness's `report` module: the committed
//! inputs replayed as its cases (`{"kind":"cases","test":"<target>","count":N}`) and libFuzzer's
//! executions as its iterations (`{"kind":"iterations","test":"<target>","count":N}`).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

/// Arguments of `cargo xtask fuzz`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// How long each target runs (libFuzzer's -max_total_time).
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// Build without optimisations (`cargo fuzz --dev`): several times quicker to build, fewer
    /// runs per second; for short smoke runs such as CI's. Long runs want the default.
    #[arg(long)]
    dev: bool,
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
        let seeds_dir = fuzz.join("seeds").join(target);
        let seeds = files_in(&seeds_dir);
        if seeds.is_empty() {
            bail!(
                "no seeds in {} for the fuzz target {target}: add some to fuzz/seeds/generate.py and run it",
                seeds_dir.display()
            );
        }
        let regressions_dir = fuzz.join("regressions").join(target);
        if !regressions_dir.is_dir() {
            bail!(
                "no {} for the fuzz target {target}: create it (with a README.md) so its crash inputs have a place",
                regressions_dir.display()
            );
        }
        // The README says what the directory is for; it is not an input.
        let regressions: Vec<PathBuf> = files_in(&regressions_dir)
            .into_iter()
            .filter(|f| f.file_name().is_none_or(|n| n != "README.md"))
            .collect();
        let replayed = regressions.len() + seeds.len();
        eprintln!(
            "xtask: fuzz {target}: replaying {} kept crash input(s) and {} seed(s)",
            regressions.len(),
            seeds.len()
        );
        let status = Command::new("cargo")
            .current_dir(fuzz)
            .args(["+nightly", "fuzz", "run", target])
            .args(args.dev.then_some("--dev"))
            .args(regressions.iter().chain(&seeds).map(|f| Path::new("..").join(f)))
            .status()
            .context("cannot run cargo fuzz")?;
        if !status.success() {
            eprintln!(
                "xtask: fuzz {target}: a kept crash input or a seed fails (the input is named above)"
            );
            return Ok(ExitCode::FAILURE);
        }
        let corpus = fuzz.join("corpus").join(target);
        std::fs::create_dir_all(&corpus)
            .with_context(|| format!("cannot create {}", corpus.display()))?;
        eprintln!("xtask: fuzz {target}: {} s from the seeds", args.seconds);
        let output = Command::new("cargo")
            .current_dir(fuzz)
            .args(["+nightly", "fuzz", "run", target])
            .args(args.dev.then_some("--dev"))
            // The working corpus first: libFuzzer writes new inputs to its first directory only.
            .arg(Path::new("corpus").join(target))
            .arg(Path::new("seeds").join(target))
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
        let Some(runs) = runs_done(&log) else {
            eprintln!("{log}");
            bail!("fuzz {target}: libFuzzer's output has no `Done N runs` line");
        };
        report(target, replayed, runs)?;
        summary.push(format!(
            "{target}: {replayed} committed input(s) replayed, then {runs} runs in {} s, no crash",
            args.seconds
        ));
    }
    for line in &summary {
        eprintln!("xtask: fuzz {line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The run count of libFuzzer's final `Done N runs in S second(s)` line.
fn runs_done(log: &str) -> Option<u64> {
    log.lines()
        .rev()
        .find_map(|l| l.strip_prefix("Done ").and_then(|r| r.split(' ').next()))
        .and_then(|n| n.parse().ok())
}

/// Appends the target's replayed inputs and run count to `$CLIPROXY_TEST_REPORT/fuzzing.jsonl`,
/// when set. The lines are written in one `write` on a file opened for appending, like the e2e
/// harness does.
fn report(target: &str, replayed: usize, runs: u64) -> Result<()> {
    use std::io::Write as _;
    let Some(dir) = std::env::var_os("CLIPROXY_TEST_REPORT") else { return Ok(()) };
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("fuzzing.jsonl");
    // Target names are file stems of Rust sources: nothing in them needs JSON escaping, but
    // they are checked rather than trusted.
    if !target.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        bail!("fuzz target name {target:?} is not a plain identifier");
    }
    let line = format!(
        "{{\"kind\":\"cases\",\"test\":\"{target}\",\"count\":{replayed}}}\n\
         {{\"kind\":\"iterations\",\"test\":\"{target}\",\"count\":{runs}}}\n"
    );
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut file| file.write_all(line.as_bytes()))
        .with_context(|| format!("cannot append to {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_count_is_read_from_libfuzzers_last_line() {
        let log = "#1024\tpulse  cov: 10\nDone 123456 runs in 31 second(s)\n";
        assert_eq!(runs_done(log), Some(123_456));
        assert_eq!(runs_done("INFO: no Done line\n"), None);
    }
}
