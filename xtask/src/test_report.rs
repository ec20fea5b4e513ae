//! `cargo xtask test-report`: runs the reliability and security proof (the workspace tests,
//! which include the end-to-end fault, hostile-input, load, crash and leak suites, then every
//! fuzz target) with `CLIPROXY_TEST_REPORT` set, collects the figures the tests record
//! (`cliproxy_e2e::report`: one JSON line per call in `<dir>/<category>.jsonl`) and writes
//! `docs/security/test-report.md`.
//!
//! A category that records nothing fails the command: a suite that silently stopped running
//! must not leave an old figure standing.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// Options of `cargo xtask test-report`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Seconds each fuzz target runs.
    #[arg(long, default_value_t = 10)]
    fuzz_seconds: u64,
    /// SIGKILL rounds of the crash-consistency test (`CLIPROXY_CRASH_ITERATIONS`).
    #[arg(long, default_value_t = 200)]
    crash_iterations: u64,
    /// Where the report goes.
    #[arg(long, default_value = "docs/security/test-report.md")]
    out: PathBuf,
    /// Render the report from the figures already in `target/test-report/` without running
    /// anything (after a run that failed half-way, say).
    #[arg(long)]
    render_only: bool,
}

/// One category of the report: its file name, title, what it proves and where it is tested.
struct Category {
    name: &'static str,
    title: &'static str,
    what: &'static str,
    tests: &'static str,
}

/// The categories, in the order of the issue that asked for them.
const CATEGORIES: &[Category] = &[
    Category {
        name: "upstream-faults",
        title: "Upstream faults",
        what: "A mock upstream misbehaving on purpose (refused, reset before headers and mid-stream, stalls past each timeout, garbage and truncated SSE, a huge response, wrong content-type, slow drip): the client gets an error in its API format or a cleanly ended stream, the credential is cooled down only for its own faults, connections and tasks return to their baseline. Behaviours: docs/security/faults.md.",
        tests: "tests/e2e/faults.rs",
    },
    Category {
        name: "disk-faults",
        title: "Disk faults",
        what: "Full filesystem under the audit log, unwritable state directory, read-only `auth.dir`, truncated or garbage credential files, a corrupted state database: each has a decided behaviour, an error naming the file, and no stored credential is lost. Behaviours: docs/security/disk-faults.md.",
        tests: "tests/e2e/disk.rs",
    },
    Category {
        name: "crash-consistency",
        title: "Crash consistency",
        what: "SIGKILL at random moments during credential writes, quota updates and audit writes; afterwards every credential decrypts, quota usage is within one flush interval, and the audit chain verifies up to its last complete line.",
        tests: "tests/e2e/crash.rs (`cargo xtask crash --iterations N` for longer runs)",
    },
    Category {
        name: "hostile-input",
        title: "Hostile input",
        what: "Raw requests against the sandboxed binary with every guard on: request smuggling, malformed framing, oversized and too many headers, slowloris, huge and deeply nested bodies, invalid UTF-8 and NUL, bad `max_tokens`, path traversal into management, methods, spoofed forwarding headers, IPv6 tricks, keys in the query string, HTTP/2 rapid reset; each with its expected answer, and a real request served after each.",
        tests: "tests/e2e/hostile.rs",
    },
    Category {
        name: "load",
        title: "Load",
        what: "Many idle connections and a flood past `server.limits.max_connections` (refused cleanly, admitted clients still served, memory bounded), and distinct client addresses through a trusted proxy's header into the per-IP limiter (tracked addresses capped at the configured `max_tracked`, 200 and 429 counts within what the limiter allows, idle addresses evicted, RSS growth bounded by what a full table of entries may cost).",
        tests: "tests/e2e/load.rs (`cargo xtask limiter-load` for 1,000,000 addresses)",
    },
    Category {
        name: "secret-leaks",
        title: "Secret leaks",
        what: "Every kind of secret planted (provider keys, OAuth tokens, client and management keys, the vault key); every gateway the end-to-end suite starts is swept at the end (logs and panics, audit files, `/metrics`, `/v0/management/status`), and every error path's body and headers are searched.",
        tests: "tests/e2e/leaks.rs and the sweep in tests/src",
    },
    Category {
        name: "tls",
        title: "TLS",
        what: "The real listener probed with `openssl s_client`: TLS 1.0/1.1, CBC, RSA key exchange, (EC)DHE-less and DHE suites and renegotiation refused, modern suites accepted; `.ci/tls-scan.sh` adds sslyze's Mozilla intermediate check.",
        tests: "tests/e2e/tls.rs, .ci/tls-scan.sh",
    },
    Category {
        name: "fuzzing",
        title: "Fuzzing",
        what: "Every `fuzz/` target (config, request validation, SSE/usage scanning, credential files, OAuth token responses, IP/CIDR and forwarding headers, audit verification) for a bounded time after replaying the crash inputs kept in `fuzz/regressions/`.",
        tests: "fuzz/fuzz_targets, `cargo xtask fuzz`",
    },
    Category {
        name: "management-matrix",
        title: "Management authorisation matrix",
        what: "Every management route (from the router's own table, so a new route without an expectation fails) × {management off, no key, wrong key, right key, remote peer, banned peer}.",
        tests: "crates/cliproxy-gateway/tests/management.rs",
    },
];

pub(crate) fn run(args: Args) -> Result<ExitCode> {
    let dir = PathBuf::from("target/test-report");
    let mut durations = Vec::new();
    if !args.render_only {
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot clear {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let absolute = std::fs::canonicalize(&dir)
            .with_context(|| format!("cannot resolve {}", dir.display()))?;
        let env = [
            ("CLIPROXY_TEST_REPORT", absolute.display().to_string()),
            ("CLIPROXY_CRASH_ITERATIONS", args.crash_iterations.to_string()),
        ];
        durations.push((
            "cargo test --workspace --locked".to_owned(),
            timed(|| cargo_with_env(&["test", "--workspace", "--locked"], &env))?,
        ));
        let seconds = args.fuzz_seconds.to_string();
        durations.push((
            format!("cargo xtask fuzz --seconds {seconds}"),
            timed(|| cargo_with_env(&["xtask", "fuzz", "--seconds", &seconds], &env))?,
        ));
    }
    let steps = dir.join("steps.txt");
    if args.render_only {
        // `<seconds> <command>` per line, as the run wrote them.
        let text = std::fs::read_to_string(&steps).unwrap_or_default();
        for line in text.lines() {
            if let Some((seconds, step)) = line.split_once(' ')
                && let Ok(seconds) = seconds.parse::<f64>()
            {
                durations.push((step.to_owned(), Duration::from_secs_f64(seconds)));
            }
        }
    } else {
        let text: String = durations
            .iter()
            .map(|(step, duration)| format!("{} {step}\n", duration.as_secs_f64()))
            .collect();
        std::fs::write(&steps, text)
            .with_context(|| format!("cannot write {}", steps.display()))?;
    }
    let entries = read_entries(&dir)?;
    let command = if args.fuzz_seconds == 10 && args.crash_iterations == 200 {
        "cargo xtask test-report".to_owned()
    } else {
        format!(
            "cargo xtask test-report --fuzz-seconds {} --crash-iterations {}",
            args.fuzz_seconds, args.crash_iterations
        )
    };
    let context = RunContext { command, commit: git_commit(), machine: machine(), durations };
    let markdown = render(&entries, &context)?;
    std::fs::write(&args.out, markdown)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    eprintln!("xtask: wrote {}", args.out.display());
    Ok(ExitCode::SUCCESS)
}

fn timed(step: impl FnOnce() -> Result<()>) -> Result<Duration> {
    let started = Instant::now();
    step()?;
    Ok(started.elapsed())
}

fn cargo_with_env(args: &[&str], env: &[(&str, String)]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    eprintln!("xtask: cargo {}", args.join(" "));
    let mut command = Command::new(&cargo);
    command.args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    let status =
        command.status().with_context(|| format!("cannot run `{cargo} {}`", args.join(" ")))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status}): the report is not written", args.join(" "));
    }
    Ok(())
}

/// Every recorded line, by category.
type Entries = BTreeMap<String, Vec<Value>>;

fn read_entries(dir: &Path) -> Result<Entries> {
    let mut entries = Entries::new();
    let listing = std::fs::read_dir(dir).with_context(|| {
        format!("cannot read {} (run without --render-only first)", dir.display())
    })?;
    for file in listing {
        let path = file.with_context(|| format!("cannot read {}", dir.display()))?.path();
        let Some(category) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".jsonl"))
            .map(str::to_owned)
        else {
            continue;
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let lines = parse_lines(&text).with_context(|| format!("in {}", path.display()))?;
        entries.insert(category, lines);
    }
    Ok(entries)
}

fn parse_lines(text: &str) -> Result<Vec<Value>> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            let value: Value = serde_json::from_str(line)
                .with_context(|| format!("line {} is not JSON: {line}", n + 1))?;
            match value["kind"].as_str() {
                Some("cases") if value["count"].is_u64() && value["test"].is_string() => Ok(value),
                Some("figure") if value["name"].is_string() && value["unit"].is_string() => {
                    Ok(value)
                }
                Some("total")
                    if value["name"].is_string()
                        && value["unit"].is_string()
                        && value["value"].is_u64() =>
                {
                    Ok(value)
                }
                _ => bail!("line {} is not a `cases`, `figure` or `total` entry: {line}", n + 1),
            }
        })
        .collect()
}

struct RunContext {
    command: String,
    commit: String,
    machine: String,
    durations: Vec<(String, Duration)>,
}

/// The Markdown report; fails when a category recorded nothing.
fn render(entries: &Entries, context: &RunContext) -> Result<String> {
    let empty: Vec<&str> = CATEGORIES
        .iter()
        .filter(|c| entries.get(c.name).is_none_or(Vec::is_empty))
        .map(|c| c.name)
        .collect();
    if !empty.is_empty() {
        bail!(
            "no figures were recorded for {}: those suites did not run (or no longer call \
             cliproxy_e2e::report); the report is not written",
            empty.join(", ")
        );
    }
    let unknown: Vec<&String> =
        entries.keys().filter(|name| !CATEGORIES.iter().any(|c| c.name == *name)).collect();
    if !unknown.is_empty() {
        bail!(
            "unknown report categories {unknown:?}: add them to CATEGORIES in xtask/src/test_report.rs"
        );
    }
    let mut out = String::new();
    let _ = writeln!(out, "# Reliability and security test report\n");
    let _ = writeln!(
        out,
        "Generated by `{}` at commit `{}` on {}. Every figure below was recorded by the test \
         that checked it, in that run; nothing here is typed by hand. Regenerate it with the \
         same command (it runs the whole workspace test suite and every fuzz target).\n",
        context.command, context.commit, context.machine
    );
    let mut total_cases = 0u64;
    let mut summary = String::from("| category | cases | tests |\n|---|---:|---|\n");
    let mut sections = String::new();
    for category in CATEGORIES {
        let lines = entries.get(category.name).map(Vec::as_slice).unwrap_or_default();
        let mut by_test: BTreeMap<&str, u64> = BTreeMap::new();
        for line in lines.iter().filter(|l| l["kind"] == "cases") {
            *by_test.entry(line["test"].as_str().unwrap_or("?")).or_default() +=
                line["count"].as_u64().unwrap_or(0);
        }
        let cases: u64 = by_test.values().sum();
        total_cases += cases;
        let _ = writeln!(
            summary,
            "| [{}](#{}) | {} | {} |",
            category.title,
            anchor(category.title),
            group_thousands(&cases.to_string()),
            category.tests
        );
        let _ = writeln!(sections, "## {}\n\n{}\n", category.title, category.what);
        if !by_test.is_empty() {
            let _ = writeln!(sections, "| test | cases |\n|---|---:|");
            for (test, count) in &by_test {
                let _ =
                    writeln!(sections, "| `{test}` | {} |", group_thousands(&count.to_string()));
            }
            sections.push('\n');
        }
        // Totals first, one row per name with the sum of its calls, in order of first call.
        let mut totals: Vec<(&str, &str, u64)> = Vec::new();
        for line in lines.iter().filter(|l| l["kind"] == "total") {
            let name = line["name"].as_str().unwrap_or("?");
            let value = line["value"].as_u64().unwrap_or(0);
            match totals.iter_mut().find(|(n, _, _)| *n == name) {
                Some(total) => total.2 += value,
                None => totals.push((name, line["unit"].as_str().unwrap_or(""), value)),
            }
        }
        let figures: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "figure").collect();
        if !figures.is_empty() || !totals.is_empty() {
            let _ = writeln!(sections, "| figure | value |\n|---|---:|");
            for (name, unit, value) in totals {
                let _ = writeln!(
                    sections,
                    "| {name} | {} {unit} |",
                    group_thousands(&value.to_string())
                );
            }
            for figure in figures {
                let _ = writeln!(
                    sections,
                    "| {} | {} {} |",
                    figure["name"].as_str().unwrap_or("?"),
                    format_value(&figure["value"]),
                    figure["unit"].as_str().unwrap_or("")
                );
            }
            sections.push('\n');
        }
    }
    let _ = writeln!(
        out,
        "{summary}| **total** | **{}** | |\n",
        group_thousands(&total_cases.to_string())
    );
    if !context.durations.is_empty() {
        let _ = writeln!(out, "| step | duration |\n|---|---:|");
        for (step, duration) in &context.durations {
            let _ = writeln!(out, "| `{step}` | {:.0} s |", duration.as_secs_f64());
        }
        out.push('\n');
    }
    out.push_str(&sections);
    Ok(out.trim_end().to_owned() + "\n")
}

/// A number as a reader wants it: whole numbers with thousands separators, others with at
/// most three significant decimals.
fn format_value(value: &Value) -> String {
    match value {
        Value::Number(n) if n.is_u64() || n.is_i64() => {
            let n = n.as_i64().map_or_else(|| n.to_string(), |n| n.to_string());
            group_thousands(&n)
        }
        Value::Number(n) => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            let text = if f.abs() >= 100.0 { format!("{f:.1}") } else { format!("{f:.3}") };
            text.trim_end_matches('0').trim_end_matches('.').to_owned()
        }
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn group_thousands(digits: &str) -> String {
    let (sign, digits) = digits.strip_prefix('-').map_or(("", digits), |d| ("-", d));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}

/// GitHub's heading anchor for a title made of words and spaces.
fn anchor(title: &str) -> String {
    title.to_lowercase().replace(' ', "-")
}

fn git_commit() -> String {
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| k.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
    format!("{cpus} CPUs, Linux {kernel}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> RunContext {
        RunContext {
            command: "cargo xtask test-report".into(),
            commit: "abc1234".into(),
            machine: "2 CPUs, Linux 6.1".into(),
            durations: vec![("cargo test --workspace --locked".into(), Duration::from_secs(600))],
        }
    }

    fn every_category() -> Entries {
        CATEGORIES
            .iter()
            .map(|c| {
                let lines = parse_lines(&format!(
                    "{{\"kind\":\"cases\",\"test\":\"t1\",\"count\":3}}\n\
                     {{\"kind\":\"cases\",\"test\":\"t1\",\"count\":2}}\n\
                     {{\"kind\":\"cases\",\"test\":\"t2\",\"count\":1}}\n\
                     {{\"kind\":\"figure\",\"name\":\"{} peak RSS\",\"value\":1234567,\"unit\":\"kB\"}}\n",
                    c.name
                ))
                .unwrap();
                (c.name.to_owned(), lines)
            })
            .collect()
    }

    #[test]
    fn the_report_sums_cases_per_test_and_lists_every_figure() {
        let report = render(&every_category(), &context()).unwrap();
        assert!(report.contains("at commit `abc1234`"), "{report}");
        for category in CATEGORIES {
            assert!(report.contains(&format!("## {}", category.title)), "{report}");
            assert!(report.contains(&format!("| {} peak RSS | 1,234,567 kB |", category.name)));
        }
        assert!(report.contains("| `t1` | 5 |\n| `t2` | 1 |"), "{report}");
        let total = CATEGORIES.len() * 6;
        assert!(report.contains(&format!("| **total** | **{total}** |")), "{report}");
        let mut big = every_category();
        big.insert(
            "load".into(),
            parse_lines("{\"kind\":\"cases\",\"test\":\"spray\",\"count\":40000}\n").unwrap(),
        );
        let report = render(&big, &context()).unwrap();
        assert!(report.contains("| [Load](#load) | 40,000 |"), "{report}");
        assert!(report.contains("| `spray` | 40,000 |"), "{report}");
        assert!(report.contains("| `cargo test --workspace --locked` | 600 s |"), "{report}");
    }

    #[test]
    fn totals_are_added_up_by_name() {
        let mut entries = every_category();
        let lines = parse_lines(
            "{\"kind\":\"total\",\"name\":\"gateways swept\",\"value\":1,\"unit\":\"gateways\"}\n\
             {\"kind\":\"total\",\"name\":\"bytes\",\"value\":600,\"unit\":\"bytes\"}\n\
             {\"kind\":\"total\",\"name\":\"gateways swept\",\"value\":1,\"unit\":\"gateways\"}\n\
             {\"kind\":\"total\",\"name\":\"bytes\",\"value\":700,\"unit\":\"bytes\"}\n",
        )
        .unwrap();
        entries.insert("secret-leaks".into(), lines);
        let report = render(&entries, &context()).unwrap();
        assert!(
            report.contains("| gateways swept | 2 gateways |\n| bytes | 1,300 bytes |"),
            "{report}"
        );
        assert_eq!(report.matches("gateways swept").count(), 1, "{report}");
        let error = parse_lines("{\"kind\":\"total\",\"name\":\"x\",\"value\":1.5,\"unit\":\"\"}")
            .unwrap_err()
            .to_string();
        assert!(error.contains("line 1"), "{error}");
    }

    #[test]
    fn a_category_that_recorded_nothing_fails_the_report() {
        let mut entries = every_category();
        entries.remove("crash-consistency");
        let error = render(&entries, &context()).unwrap_err().to_string();
        assert!(error.contains("crash-consistency"), "{error}");
        entries = every_category();
        entries.insert("typo-category".into(), entries["tls"].clone());
        let error = render(&entries, &context()).unwrap_err().to_string();
        assert!(error.contains("typo-category"), "{error}");
    }

    #[test]
    fn malformed_lines_are_refused_with_their_number() {
        let error = parse_lines("{\"kind\":\"cases\",\"test\":\"x\",\"count\":1}\nnot json\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("line 2"), "{error}");
        let error = parse_lines("{\"kind\":\"cases\",\"count\":1}\n").unwrap_err().to_string();
        assert!(error.contains("line 1"), "{error}");
    }

    #[test]
    fn numbers_are_formatted_for_reading() {
        assert_eq!(format_value(&serde_json::json!(1_000_000)), "1,000,000");
        assert_eq!(format_value(&serde_json::json!(-1234)), "-1,234");
        assert_eq!(format_value(&serde_json::json!(12.5)), "12.5");
        assert_eq!(format_value(&serde_json::json!(0.12345)), "0.123");
        assert_eq!(format_value(&serde_json::json!(257.349)), "257.3");
        assert_eq!(format_value(&serde_json::json!(3.0)), "3");
        assert_eq!(anchor("Management authorisation matrix"), "management-authorisation-matrix");
    }
}
