//! `cargo xtask bench`: builds the release gateway and the harness (`cliproxy-bench`), runs
//! the per-IP limiter benchmark of `cliproxy-netguard` (scenario 6), then the harness's
//! scenarios, which write `target/bench/report.md` and `report.json`. The harness itself lives
//! in `bench/` (see its crate docs and docs/performance.md); this module only builds and
//! launches it.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

/// Options of `cargo xtask bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Short durations (about a second per measurement): a smoke run for tests and CI.
    #[arg(long)]
    quick: bool,
    /// Run only this scenario (repeatable): 1 fixed rate, 2 closed loop, 3 streaming,
    /// 4 open streams, 5 layer costs, 6 per-IP limiter, 7 cold start and idle RSS,
    /// 8 translation (CPU of an Anthropic client's request and stream to an OpenAI provider),
    /// 9 Redis backend (SQLite vs Redis, 1 to 3 instances on one Redis, Redis's cost per
    /// request; needs `redis-server`).
    #[arg(long = "scenario", value_name = "N")]
    scenarios: Vec<u8>,
    /// Do not pin the processes to CPUs with taskset.
    #[arg(long)]
    no_pin: bool,
}

pub(crate) fn run(args: Args) -> Result<ExitCode> {
    let root = workspace_root()?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| if dir.is_absolute() { dir } else { root.join(dir) })
        .unwrap_or_else(|| root.join("target"));
    let out = target.join("bench");
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;

    cargo(
        &root,
        &["build", "--release", "--locked", "-p", "cliproxy-server", "-p", "cliproxy-bench"],
    )?;
    let wanted = |n: u8| args.scenarios.is_empty() || args.scenarios.contains(&n);
    let pin = !args.no_pin && which("taskset");

    let mut harness = Vec::new();
    if pin {
        harness.extend(["taskset".to_owned(), "-c".to_owned(), "1".to_owned()]);
    }
    harness.push(target.join("release/cliproxy-bench").display().to_string());
    harness.extend(["run".to_owned(), "--server".to_owned()]);
    harness.push(target.join("release/cliproxy-server").display().to_string());
    harness.push("--out".to_owned());
    harness.push(out.display().to_string());
    if args.quick {
        harness.push("--quick".to_owned());
    }
    for scenario in &args.scenarios {
        harness.extend(["--scenario".to_owned(), scenario.to_string()]);
    }
    if !pin {
        harness.push("--no-pin".to_owned());
    }
    if wanted(6) {
        let output = out.join("limiter.txt");
        limiter_bench(&root, &output, pin)?;
        harness.extend(["--limiter-output".to_owned(), output.display().to_string()]);
    }
    let mut reproduce = vec!["cargo xtask bench".to_owned()];
    if args.quick {
        reproduce.push("--quick".to_owned());
    }
    for scenario in &args.scenarios {
        reproduce.push(format!("--scenario {scenario}"));
    }
    if args.no_pin {
        reproduce.push("--no-pin".to_owned());
    }
    harness.extend(["--command".to_owned(), reproduce.join(" ")]);

    eprintln!("xtask: {}", harness.join(" "));
    let status = Command::new(&harness[0])
        .args(&harness[1..])
        .current_dir(&root)
        .status()
        .context("cannot start cliproxy-bench")?;
    if !status.success() {
        bail!(
            "the benchmark failed ({status}); see the error above and {}/work/logs",
            out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `cargo bench -p cliproxy-netguard --bench limiter`, pinned to the gateway's CPU, its output
/// saved for the harness to parse. The build runs first, unpinned, on every CPU.
fn limiter_bench(root: &Path, output: &Path, pin: bool) -> Result<()> {
    let args = ["bench", "--locked", "-p", "cliproxy-netguard", "--bench", "limiter"];
    cargo(root, &[&args[..], &["--no-run"]].concat())?;
    let cargo_bin = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = if pin {
        let mut command = Command::new("taskset");
        command.args(["-c", "0", &cargo_bin]);
        command
    } else {
        Command::new(&cargo_bin)
    };
    eprintln!("xtask: cargo {}", args.join(" "));
    let run = command
        .args(args)
        .current_dir(root)
        .output()
        .context("cannot run the limiter benchmark")?;
    std::fs::write(output, &run.stdout)
        .with_context(|| format!("cannot write {}", output.display()))?;
    if !run.status.success() {
        // The benchmark exits 1 when the spray outgrew its memory cap; its table is still
        // written and the report shows the miss. Anything without a table is an error there.
        eprintln!(
            "xtask: the limiter benchmark exited with {}: {}",
            run.status,
            String::from_utf8_lossy(&run.stderr).lines().last().unwrap_or_default()
        );
    }
    Ok(())
}

fn workspace_root() -> Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).context("xtask has no parent directory")
}

fn which(program: &str) -> bool {
    Command::new(program)
        .arg("-V")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn cargo(root: &Path, args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    eprintln!("xtask: cargo {}", args.join(" "));
    let status = Command::new(&cargo)
        .args(args)
        .current_dir(root)
        .status()
        .with_context(|| format!("cannot run `{cargo} {}`", args.join(" ")))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}
