//! `cargo xtask test-report`: runs the reliability and security proof (the workspace tests,
//! which include the end-to-end fault, hostile-input, load, crash and leak suites, then every
//! fuzz target) with `CLIPROXY_TEST_REPORT` set, collects the figures the tests record
//! (`cliproxy_e2e::report`: one JSON line per call in `<dir>/<category>.jsonl`) and writes
//! `docs/security/test-report.md`.
//!
//! Tests record two kinds of counts, shown apart: scenarios (`{"kind":"cases"}`: distinct
//! cases, each with its own expected answer) and iterations (`{"kind":"iterations"}`: one
//! scenario repeated, such as SIGKILL rounds, addresses sprayed or fuzzer executions).
//!
//! Each category lists the tests that must record a count and the figures that must be
//! recorded ([`CATEGORIES`]); a run that misses any of them, or records one the list does not
//! name, fails the command naming it: a test that silently stopped running (or renamed its
//! figure) must not leave an old figure standing or a gap nobody sees.
//!
//! `.ci/run` runs the same two steps itself with `CLIPROXY_TEST_REPORT` set to a scratch
//! directory, writes their durations to `<dir>/steps.txt`, and renders the report from there
//! with `--render-only --dir <dir> --generated-by .ci/run`.

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
    /// Render the report from the figures already in `--dir` without running anything
    /// (after a run that failed half-way, say, or after `.ci/run`'s own test steps). The step
    /// durations are read from `<dir>/steps.txt`: `<seconds> <command>` per line.
    #[arg(long)]
    render_only: bool,
    /// The directory the tests record their figures in (`CLIPROXY_TEST_REPORT`).
    #[arg(long, default_value = "target/test-report")]
    dir: PathBuf,
    /// What the report's header says generated it (default: this command with its options).
    #[arg(long)]
    generated_by: Option<String>,
}

/// One category of the report: its file name, title, what it proves, where it is tested, and
/// what every run must record in it.
struct Category {
    name: &'static str,
    title: &'static str,
    what: &'static str,
    /// Where it is tested, as the summary table shows it.
    source: &'static str,
    /// The tests that must record scenarios or iterations (`report::cases`,
    /// `report::iterations`), by the name they record.
    tests: &'static [&'static str],
    /// The figures (`report::figure`) and totals (`report::total`) that must be recorded, by
    /// name.
    figures: &'static [&'static str],
}

/// The categories, in the order of the issue that asked for them.
const CATEGORIES: &[Category] = &[
    Category {
        name: "upstream-faults",
        title: "Upstream faults",
        what: "A mock upstream misbehaving on purpose (refused, reset before headers and mid-stream, stalls past each timeout, garbage and truncated SSE, a huge response, wrong content-type, slow drip): the client gets an error in its API format or a cleanly ended stream, the credential is cooled down only for its own faults, connections and tasks return to their baseline. Behaviours: docs/security/faults.md.",
        source: "tests/e2e/faults.rs",
        tests: &[
            "upstream_faults_are_clear_errors_and_leak_nothing",
            "a_client_gone_mid_stream_closes_the_upstream_connection",
            "a_gigabyte_streams_through_with_bounded_memory",
        ],
        figures: &[
            "baseline active connections",
            "baseline runtime tasks",
            "baseline open file descriptors",
            "baseline threads",
            "RSS baseline before the 1 GiB response",
            "RSS peak during the 1 GiB response",
            "bytes streamed through the gateway",
            "time for the 1 GiB response (debug build)",
            "throughput of the 1 GiB response (debug build)",
        ],
    },
    Category {
        name: "disk-faults",
        title: "Disk faults",
        what: "Full filesystem under the audit log, unwritable state directory, read-only `auth.dir`, truncated or garbage credential files, a corrupted state database: each has a decided behaviour, an error naming the file, and no stored credential is lost. Behaviours: docs/security/disk-faults.md.",
        source: "tests/e2e/disk.rs",
        tests: &[
            "a_full_audit_disk_keeps_serving_says_so_and_recovers",
            "an_unwritable_state_store_stops_the_start_naming_the_file_and_key",
            "a_state_store_failing_while_running_keeps_serving_and_catches_up",
            "a_read_only_auth_dir_serves_and_refuses_writes_naming_it",
            "a_damaged_credential_file_stops_the_start_naming_it_and_is_kept",
            "a_damaged_state_database_stops_the_start_naming_it_and_the_way_out",
        ],
        figures: &[],
    },
    Category {
        name: "crash-consistency",
        title: "Crash consistency",
        what: "SIGKILL at random moments during credential writes, quota updates, audit writes, client key creations and usage-history flushes; afterwards every credential decrypts, quota usage and the usage history's requests are within one flush interval, every acknowledged client key is listed and works (a creation cut off by the kill is there or not, never broken), and the audit chain verifies up to its last complete line.",
        source: "tests/e2e/crash.rs (`cargo xtask crash --iterations N` for longer runs)",
        tests: &[
            "sigkill_at_random_moments_loses_nothing_acknowledged",
            "quota_usage_is_durable_within_one_flush_interval",
        ],
        figures: &[
            "iterations (SIGKILLs)",
            "seed (CLIPROXY_CRASH_SEED)",
            "kills with a credential write in flight",
            "kills with a proxied request (quota update) but no credential write in flight",
            "kills with only audit-writing requests in flight",
            "credentials checked after kills",
            "acknowledged credential writes",
            "acknowledged proxied requests",
            "max quota usage lost (below acknowledged)",
            "bound at that kill (one flush interval of usage)",
            "max quota usage above acknowledged (in flight)",
            "oldest answered usage lost (answered this long before the kill)",
            "kills that lost some acknowledged usage",
            "allowed age of lost usage and audit lines (one flush interval + margin)",
            "acknowledged requests found in the audit log by request id",
            "refused requests found by id in a summary line",
            "run before each kill",
            "state.flush_interval",
            "torn audit lines seen",
            "total duration",
            "client keys created (acknowledged)",
            "kills with a client key creation in flight",
            "creations cut off by a kill found stored (listed after the restart)",
            "acknowledged client keys checked after restarts (listed, answered 200)",
            "max usage-history requests lost (below acknowledged)",
            "usage-history bound at that kill (requests answered within one flush interval + margin)",
            "max usage-history requests above acknowledged (in flight)",
            "oldest usage-history request lost (answered this long before the kill)",
            "worst time from answer to durable usage (flush_interval 1 s)",
        ],
    },
    Category {
        name: "hostile-input",
        title: "Hostile input",
        what: "Raw requests against the sandboxed binary with every guard on: request smuggling, malformed framing, oversized and too many headers, slowloris, huge and deeply nested bodies, invalid UTF-8 and NUL, bad `max_tokens` under every spelling the providers accept, keys given twice at any depth, a model name carrying a forged log line, path traversal into management, forwarded and browser (`Origin`) management calls, methods, spoofed forwarding headers, IPv6 tricks, keys in the query string (percent-encoded too), HTTP/2 rapid reset; each with its expected answer, and a real request served after each. Key-guessing floods (3,000 refused keys on one connection, 5,000 guesses from as many rotating loopback addresses, each management guess a ban) write an audit log bounded by their duration, not by the number of guesses or addresses, with every refusal counted and every refused request found by id. A client cannot bench the credentials: upstream refusals that are not the key's (a model the account may not use, missing scopes, a firewall page, key words past the body cap or the parser's depth) come back as they are with no failover and no rest, and a key that keeps causing real cool-downs is throttled and audited (`server.security.cooldown_abuse`).",
        source: "tests/e2e/hostile.rs",
        tests: &[
            "every_hostile_input_gets_its_answer_and_the_gateway_keeps_serving",
            "three_thousand_refused_keys_on_one_connection_write_a_bounded_audit_log",
            "a_key_guessing_flood_from_rotating_addresses_writes_a_bounded_audit_log",
            "a_client_cannot_bench_the_credentials",
        ],
        figures: &[
            "audit lines for 3,000 refused keys on one connection",
            "audit bytes for 3,000 refused keys on one connection",
            "audit lines for 5,000 guesses from rotating addresses",
            "audit bytes for 5,000 guesses from rotating addresses",
            "time the rotating-address flood took",
        ],
    },
    Category {
        name: "load",
        title: "Load",
        what: "Many idle connections and a flood past `server.limits.max_connections` (refused cleanly, admitted clients still served, memory bounded), and distinct client addresses through a trusted proxy's header into the per-IP limiter (tracked addresses capped at the configured `max_tracked`, 200 and 429 counts within what the limiter allows, idle addresses evicted, RSS growth bounded by what a full table of entries may cost). One address cannot hold more than `server.limits.max_connections_per_ip` connections (a trusted proxy is exempt), and a body that never comes is cut at `server.limits.body_read_timeout` with 408.",
        source: "tests/e2e/load.rs (`cargo xtask limiter-load` for 1,000,000 addresses)",
        tests: &[
            "ten_thousand_idle_connections_and_a_flood_beyond_the_limit",
            "a_spray_of_client_addresses_through_a_trusted_proxy",
            "silent_connections_are_closed_at_the_header_read_timeout_and_free_their_slots",
            "the_per_ip_limiters_memory_is_what_its_tracked_addresses_cost",
            "one_address_cannot_hold_every_connection",
            "a_trusted_proxy_is_exempt_from_the_per_ip_cap",
            "a_body_that_never_comes_gets_408_at_the_body_read_timeout",
        ],
        figures: &[
            "idle connections held (debug build)",
            "RSS idle, one request served",
            "RSS with the connections held",
            "RSS per held connection",
            "flood connections past max_connections",
            "flood connections served (free slots)",
            "flood connections refused at accept",
            "RSS after the flood",
            "client addresses sprayed",
            "per-IP limiter max_tracked",
            "per-IP limiter peak tracked",
            "sprayed requests refused by the overflow bucket",
            "RSS before the spray",
            "RSS at the spray's peak",
            "RSS after idle eviction",
            "spray requests per second",
            "sprayed requests admitted (200)",
            "sprayed requests the limiter could admit at most",
            "memory spray: per-IP limiter max_tracked",
            "memory spray: peak tracked",
            "memory spray: RSS growth over the warmed-up baseline",
            "memory spray: RSS growth allowed",
            "body read timeout 1s: cut after (/v1/chat/completions)",
            "body read timeout 1s: cut after (/v1/messages)",
        ],
    },
    Category {
        name: "secret-leaks",
        title: "Secret leaks",
        what: "Every kind of secret planted (provider keys, OAuth tokens, client and management keys, the vault key); every gateway the end-to-end suite starts is swept at the end (logs and panics, audit files, `/metrics`, `/v0/management/status`), every Redis server of the Redis tests is swept (each key's value and its `DUMP`), and every error path's body and headers are searched.",
        source: "tests/e2e/leaks.rs and the sweep in tests/src",
        tests: &["no_error_answer_carries_a_planted_secret"],
        figures: &[
            "gateways swept after their tests",
            "bytes of their output, files, metrics and status scanned",
            "searches (planted secrets × gateways)",
            "hits in swept gateways",
            "error answers scanned",
            "error answer bytes scanned",
            "successful answers scanned",
            "successful answer bytes scanned",
            "hits in the answers scanned",
            "bytes of Redis values scanned",
        ],
    },
    Category {
        name: "tls",
        title: "TLS",
        what: "The real listener probed with `openssl s_client`: TLS 1.0/1.1, CBC, RSA key exchange, (EC)DHE-less and DHE suites and renegotiation refused, modern suites accepted; `.ci/tls-scan.sh` adds sslyze's Mozilla intermediate check.",
        source: "tests/e2e/tls.rs, .ci/tls-scan.sh",
        tests: &[
            "tls_catalogue_accepts_modern_suites_and_refuses_old_protocols_cbc_rsa_kx_dhe",
            "client_initiated_renegotiation_is_refused_and_the_gateway_keeps_serving",
        ],
        figures: &[],
    },
    Category {
        name: "fuzzing",
        title: "Fuzzing",
        what: "Every `fuzz/` target (config, request validation, SSE/usage scanning and stripping, credential files, OAuth token responses, IP/CIDR and forwarding headers, audit verification, upstream error bodies, upstream model lists, API-format translation of requests, replies, errors and stream events, the usage query string, client-key bodies, what the Redis state store reads back) for a bounded time, starting from the seed inputs committed in `fuzz/seeds/`, after replaying those seeds and the crash inputs kept in `fuzz/regressions/` (the scenarios: committed inputs replayed; the iterations: libFuzzer's executions).",
        source: "fuzz/fuzz_targets, `cargo xtask fuzz`",
        tests: &[
            "audit_verify",
            "config_yaml",
            "credential_file",
            "forwarded_headers",
            "ip_cidr",
            "model_list",
            "oauth_token_response",
            "request_validation",
            "translate_request",
            "translate_stream",
            "upstream_error_body",
            "usage_query",
            "usage_scanner",
            "usage_stripper",
            "client_key_body",
            "redis_state_values",
        ],
        figures: &[],
    },
    Category {
        name: "management-matrix",
        title: "Management authorisation matrix",
        what: "Every management route (from the router's own table, so a new route without an expectation fails) × {management off, no key, wrong key, right key, remote peer, banned peer}, over real TCP connections from real source addresses (a private network namespace gives the remote peer a non-loopback address), each cell against seeded state (credentials on disk, a denylist entry, maintenance off, a new client key in the config): an allowed call must make exactly its change, a refused one must change nothing.",
        source: "bins/cliproxy-server/tests/management.rs",
        tests: &["every_route_answers_each_kind_of_caller_as_expected"],
        figures: &["management routes in the router's table"],
    },
    Category {
        name: "client-keys",
        title: "Client keys created at run time",
        what: "Client keys created, changed and revoked at run time through the real binary: by the management API (in force at once) and by `cliproxy-server keys` on the same state store while the server runs (in force within a second), on one gateway and seen by another sharing the store; model lists and expiry honoured; SIGKILLs during creations lose no acknowledged key; the key appears in no log, audit line, metric, state row or API answer after its creation.",
        source: "tests/e2e/client_keys.rs",
        tests: &["sigkill_during_key_creations_loses_no_acknowledged_key"],
        figures: &[
            "created by the CLI to in force",
            "revoked by the CLI to refused",
            "SIGKILLs during key creations",
            "acknowledged keys checked after restarts",
            "creations in flight that landed",
            "created on one gateway to in force on another",
            "revoked on one gateway to refused by another",
        ],
    },
    Category {
        name: "usage-history",
        title: "Usage history",
        what: "Requests through the real binary, then `cliproxy-server usage --json` (offline, on the state store) and `GET /v0/management/usage` give the same rows and totals (requests, tokens by kind, cost); the history survives a restart; each request's row is committed within one flush interval of its answer, and none is lost to a SIGKILL once durable.",
        source: "tests/e2e/usage_history.rs",
        tests: &["the_cli_and_the_api_agree_and_the_history_survives_restart_and_sigkill"],
        figures: &["worst time from answer to durable usage row (flush_interval 1 s)"],
    },
    Category {
        name: "redis",
        title: "Several gateways on one Redis",
        what: "Gateway processes sharing one real `redis-server` (`state.backend: redis`, SPEC §11): three instances at three times a per-key limit admit what one limit allows; a key revoked, an address denylisted and a credential cooled down on one instance are in force on the others within a second; two instances refreshing one OAuth credential make one token request, and Redis holds no token in clear; Redis killed under load (`on_unavailable: local`) leaves every request answered within its timeout and says so (log, status, metric), `deny` answers 503 naming the setting; a Redis restarted empty is re-seeded from the instances and said loudly. Behaviours: docs/deploy.md.",
        source: "tests/e2e/redis.rs",
        tests: &[
            "three_gateways_hold_one_per_key_limit_between_them",
            "a_key_revoked_on_one_instance_is_refused_by_the_others_within_a_second",
            "an_address_denylisted_on_one_instance_is_refused_by_all_within_a_second",
            "redis_killed_under_load_local_keeps_answering_and_says_so_then_catches_up",
            "redis_down_with_deny_answers_503_naming_the_setting",
            "redis_restarted_empty_is_reseeded_from_the_instances_and_said_loudly",
            "a_credential_cooled_down_on_one_instance_is_skipped_by_all",
            "two_instances_refreshing_one_oauth_credential_make_one_token_request",
            "check_says_whether_redis_answers_and_keeps_what_it_is_told",
            "sigkill_of_a_gateway_or_of_redis_loses_no_acknowledged_key",
        ],
        figures: &[
            "accepted of 1800 at a shared 600/min limit",
            "bound (600 + refill) x 1.01",
            "revocation in force on every instance after",
            "denylist entry in force on every instance after",
            "slowest request while Redis was killed (timeout 200 ms)",
            "cool-down in force on every instance after",
            "acknowledged key creations checked after SIGKILLs",
        ],
    },
];

pub(crate) fn run(args: Args) -> Result<ExitCode> {
    let dir = args.dir.clone();
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
        let text = std::fs::read_to_string(&steps).unwrap_or_default();
        durations = parse_steps(&text).with_context(|| format!("in {}", steps.display()))?;
    } else {
        let text: String = durations
            .iter()
            .map(|(step, duration)| format!("{} {step}\n", duration.as_secs_f64()))
            .collect();
        std::fs::write(&steps, text)
            .with_context(|| format!("cannot write {}", steps.display()))?;
    }
    let entries = read_entries(&dir)?;
    let command = args.generated_by.clone().unwrap_or_else(|| {
        if args.fuzz_seconds == 10 && args.crash_iterations == 200 {
            "cargo xtask test-report".to_owned()
        } else {
            format!(
                "cargo xtask test-report --fuzz-seconds {} --crash-iterations {}",
                args.fuzz_seconds, args.crash_iterations
            )
        }
    });
    let (commit, changed) = git_commit(&args.out);
    let context = RunContext { command, commit, changed, machine: machine(), durations };
    let markdown = render(&entries, &context)?;
    std::fs::write(&args.out, markdown)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    eprintln!("xtask: wrote {}", args.out.display());
    Ok(ExitCode::SUCCESS)
}

/// The steps and their durations: `<seconds> <command>` per line, as a run wrote them.
fn parse_steps(text: &str) -> Result<Vec<(String, Duration)>> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let (seconds, step) = line
                .split_once(' ')
                .with_context(|| format!("not `<seconds> <command>`: {line}"))?;
            let seconds: f64 = seconds
                .parse()
                .ok()
                .filter(|s: &f64| s.is_finite() && *s >= 0.0)
                .with_context(|| format!("not a number of seconds: {line}"))?;
            Ok((step.to_owned(), Duration::from_secs_f64(seconds)))
        })
        .collect()
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
                Some("cases" | "iterations")
                    if value["count"].is_u64() && value["test"].is_string() =>
                {
                    Ok(value)
                }
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
                _ => bail!(
                    "line {} is not a `cases`, `iterations`, `figure` or `total` entry: {line}",
                    n + 1
                ),
            }
        })
        .collect()
}

struct RunContext {
    command: String,
    commit: String,
    /// Tracked files that differed from `commit` (comma-separated; empty when none did).
    changed: String,
    machine: String,
    durations: Vec<(String, Duration)>,
}

/// Checks the run against [`CATEGORIES`]: every listed test recorded a count, every listed
/// figure was recorded, and nothing was recorded that the list does not name. The error names
/// each problem, one per line.
fn check_recorded(entries: &Entries) -> Result<()> {
    let mut problems = Vec::new();
    for name in entries.keys().filter(|name| !CATEGORIES.iter().any(|c| c.name == *name)) {
        problems.push(format!("{name}: a category CATEGORIES does not list"));
    }
    for category in CATEGORIES {
        let lines = entries.get(category.name).map(Vec::as_slice).unwrap_or_default();
        let recorded = |kinds: &[&str], key: &str| -> Vec<&str> {
            let mut names: Vec<&str> = lines
                .iter()
                .filter(|l| l["kind"].as_str().is_some_and(|k| kinds.contains(&k)))
                .filter_map(|l| l[key].as_str())
                .collect();
            names.sort_unstable();
            names.dedup();
            names
        };
        let tests = recorded(&["cases", "iterations"], "test");
        let figures = recorded(&["figure", "total"], "name");
        let name = category.name;
        for test in category.tests.iter().filter(|t| !tests.contains(t)) {
            problems.push(format!("{name}: test `{test}` recorded no scenarios or iterations"));
        }
        for figure in category.figures.iter().filter(|f| !figures.contains(f)) {
            problems.push(format!("{name}: figure `{figure}` was not recorded"));
        }
        for test in tests.iter().filter(|t| !category.tests.contains(t)) {
            problems
                .push(format!("{name}: test `{test}` recorded, but CATEGORIES does not list it"));
        }
        for figure in figures.iter().filter(|f| !category.figures.contains(f)) {
            problems.push(format!(
                "{name}: figure `{figure}` recorded, but CATEGORIES does not list it"
            ));
        }
    }
    if !problems.is_empty() {
        bail!(
            "the run did not record what CATEGORIES in xtask/src/test_report.rs expects (a test \
             that did not run, or a figure renamed); the report is not written:\n  {}",
            problems.join("\n  ")
        );
    }
    Ok(())
}

/// Scenarios and iterations recorded per test, in the order of [`Category::tests`].
fn counts_by_test<'a>(category: &Category, lines: &'a [Value]) -> Vec<(&'a str, u64, u64)> {
    let mut by_test: Vec<(&str, u64, u64)> = Vec::new();
    for line in lines {
        let (scenarios, iterations) = match (line["kind"].as_str(), line["count"].as_u64()) {
            (Some("cases"), Some(count)) => (count, 0),
            (Some("iterations"), Some(count)) => (0, count),
            _ => continue,
        };
        let test = line["test"].as_str().unwrap_or("?");
        match by_test.iter_mut().find(|(t, _, _)| *t == test) {
            Some(entry) => {
                entry.1 += scenarios;
                entry.2 += iterations;
            }
            None => by_test.push((test, scenarios, iterations)),
        }
    }
    let position = |test: &str| category.tests.iter().position(|t| *t == test);
    by_test.sort_by_key(|(test, _, _)| position(test));
    by_test
}

/// The Markdown report; fails when the run did not record what [`CATEGORIES`] expects.
fn render(entries: &Entries, context: &RunContext) -> Result<String> {
    check_recorded(entries)?;
    let mut out = String::new();
    let _ = writeln!(out, "# Reliability and security test report\n");
    let _ = writeln!(
        out,
        "Generated by `{}` at commit `{}`{} on {}. Every figure below was recorded by the test \
         that checked it, in that run; nothing here is typed by hand. Regenerate it with the \
         same command (it runs the whole workspace test suite and every fuzz target).\n",
        context.command,
        context.commit,
        if context.changed.is_empty() {
            String::new()
        } else {
            format!(" (with uncommitted changes to {})", context.changed)
        },
        context.machine
    );
    let _ = writeln!(
        out,
        "A **scenario** is a distinct case with its own expected answer (a hostile request, a \
         damaged file, a committed fuzz input replayed); an **iteration** is one more run of a \
         scenario already counted (a SIGKILL round, an address sprayed into the limiter, a \
         fuzzer execution). The two are counted apart and never added together.\n"
    );
    let (mut total_scenarios, mut total_iterations) = (0u64, 0u64);
    let mut summary =
        String::from("| category | scenarios | iterations | tests |\n|---|---:|---:|---|\n");
    let mut sections = String::new();
    for category in CATEGORIES {
        let lines = entries.get(category.name).map(Vec::as_slice).unwrap_or_default();
        let by_test = counts_by_test(category, lines);
        let scenarios: u64 = by_test.iter().map(|(_, s, _)| s).sum();
        let iterations: u64 = by_test.iter().map(|(_, _, i)| i).sum();
        total_scenarios += scenarios;
        total_iterations += iterations;
        let _ = writeln!(
            summary,
            "| [{}](#{}) | {} | {} | {} |",
            category.title,
            anchor(category.title),
            group_thousands(&scenarios.to_string()),
            group_thousands(&iterations.to_string()),
            category.source
        );
        let _ = writeln!(sections, "## {}\n\n{}\n", category.title, category.what);
        if !by_test.is_empty() {
            let _ = writeln!(sections, "| test | scenarios | iterations |\n|---|---:|---:|");
            for (test, scenarios, iterations) in &by_test {
                let _ = writeln!(
                    sections,
                    "| `{test}` | {} | {} |",
                    group_thousands(&scenarios.to_string()),
                    group_thousands(&iterations.to_string())
                );
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
        "{summary}| **total** | **{}** | **{}** | |\n",
        group_thousands(&total_scenarios.to_string()),
        group_thousands(&total_iterations.to_string())
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

/// The commit the report describes, and the tracked files other than the report `out` that
/// differ from it (empty when none do).
fn git_commit(out: &Path) -> (String, String) {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".to_owned());
    // The report being rewritten is not a change to the code it describes.
    let changed = match git(&["diff", "HEAD", "--name-only"]) {
        Some(files) => files.lines().filter(|f| Path::new(f) != out).collect::<Vec<_>>().join(", "),
        None => "unknown files (`git diff HEAD` failed)".to_owned(),
    };
    (commit, changed)
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
            changed: String::new(),
            machine: "2 CPUs, Linux 6.1".into(),
            durations: vec![("cargo test --workspace --locked".into(), Duration::from_secs(600))],
        }
    }

    fn line(entry: &Value) -> String {
        entry.to_string() + "\n"
    }

    /// A run that recorded everything: 2 scenarios for each listed test, and each listed
    /// figure as 7 (a total for the secret sweep's names, as the sweep records them).
    fn every_category() -> Entries {
        CATEGORIES
            .iter()
            .map(|c| {
                let mut text = String::new();
                for test in c.tests {
                    let cases = serde_json::json!({"kind": "cases", "test": test, "count": 1});
                    text += &line(&cases);
                    text += &line(&cases);
                }
                for name in c.figures {
                    let kind = if name.contains("swept") || name.contains("searches") {
                        "total"
                    } else {
                        "figure"
                    };
                    text += &line(
                        &serde_json::json!({"kind": kind, "name": name, "value": 7, "unit": "u"}),
                    );
                }
                (c.name.to_owned(), parse_lines(&text).unwrap())
            })
            .collect()
    }

    fn listed_tests() -> usize {
        CATEGORIES.iter().map(|c| c.tests.len()).sum()
    }

    #[test]
    fn a_complete_run_renders_every_category_test_and_figure() {
        let report = render(&every_category(), &context()).unwrap();
        assert!(report.contains("at commit `abc1234` on 2 CPUs"), "{report}");
        for category in CATEGORIES {
            assert!(report.contains(&format!("## {}", category.title)), "{report}");
            for test in category.tests {
                assert!(report.contains(&format!("| `{test}` | 2 | 0 |")), "{test}: {report}");
            }
            for figure in category.figures {
                assert!(report.contains(&format!("| {figure} | 7 u |")), "{figure}: {report}");
            }
        }
        let scenarios = listed_tests() * 2;
        assert!(report.contains(&format!("| **total** | **{scenarios}** | **0** |")), "{report}");
        assert!(report.contains("| `cargo test --workspace --locked` | 600 s |"), "{report}");
        let mut dirty = context();
        dirty.changed = "src/lib.rs".into();
        let report = render(&every_category(), &dirty).unwrap();
        assert!(
            report.contains("at commit `abc1234` (with uncommitted changes to src/lib.rs) on"),
            "{report}"
        );
    }

    #[test]
    fn scenarios_and_iterations_are_counted_apart() {
        let mut entries = every_category();
        let spray = "a_spray_of_client_addresses_through_a_trusted_proxy";
        let load = entries.get_mut("load").unwrap();
        load.retain(|l| l["test"] != spray);
        load.extend(
            parse_lines(&format!(
                "{{\"kind\":\"cases\",\"test\":\"{spray}\",\"count\":3}}\n\
                 {{\"kind\":\"iterations\",\"test\":\"{spray}\",\"count\":40000}}\n\
                 {{\"kind\":\"iterations\",\"test\":\"{spray}\",\"count\":2000}}\n"
            ))
            .unwrap(),
        );
        let report = render(&entries, &context()).unwrap();
        assert!(report.contains(&format!("| `{spray}` | 3 | 42,000 |")), "{report}");
        let load_scenarios = 2 * (CATEGORIES[4].tests.len() - 1) + 3;
        assert_eq!(CATEGORIES[4].name, "load");
        assert!(
            report.contains(&format!("| [Load](#load) | {load_scenarios} | 42,000 |")),
            "{report}"
        );
        let scenarios = listed_tests() * 2 - 2 + 3;
        assert!(
            report.contains(&format!("| **total** | **{scenarios}** | **42,000** |")),
            "{report}"
        );
    }

    #[test]
    fn a_missing_figure_fails_the_report_naming_it() {
        let mut entries = every_category();
        entries.get_mut("load").unwrap().retain(|l| l["name"] != "RSS after the flood");
        let error = render(&entries, &context()).unwrap_err().to_string();
        assert!(error.contains("load: figure `RSS after the flood` was not recorded"), "{error}");
        assert_eq!(error.matches("\n  ").count(), 1, "only that one: {error}");
    }

    #[test]
    fn a_missing_test_fails_the_report_naming_it() {
        let mut entries = every_category();
        let test = "quota_usage_is_durable_within_one_flush_interval";
        entries.get_mut("crash-consistency").unwrap().retain(|l| l["test"] != test);
        let error = render(&entries, &context()).unwrap_err().to_string();
        assert!(
            error.contains(&format!("crash-consistency: test `{test}` recorded no scenarios")),
            "{error}"
        );
        // A whole category missing names each of its tests and figures.
        let mut entries = every_category();
        entries.remove("tls");
        let error = render(&entries, &context()).unwrap_err().to_string();
        for test in CATEGORIES.iter().find(|c| c.name == "tls").unwrap().tests {
            assert!(error.contains(&format!("tls: test `{test}`")), "{error}");
        }
    }

    #[test]
    fn anything_recorded_that_the_list_does_not_name_fails_the_report() {
        let mut entries = every_category();
        entries.get_mut("load").unwrap().extend(
            parse_lines(
                "{\"kind\":\"figure\",\"name\":\"RSS after teh flood\",\"value\":1,\"unit\":\"KiB\"}\n\
                 {\"kind\":\"iterations\",\"test\":\"a_new_loop\",\"count\":5}\n",
            )
            .unwrap(),
        );
        entries.insert("typo-category".into(), entries["tls"].clone());
        let error = render(&entries, &context()).unwrap_err().to_string();
        assert!(error.contains("load: figure `RSS after teh flood` recorded, but"), "{error}");
        assert!(error.contains("load: test `a_new_loop` recorded, but"), "{error}");
        assert!(error.contains("typo-category: a category CATEGORIES does not list"), "{error}");
    }

    #[test]
    fn totals_are_added_up_by_name() {
        let mut entries = every_category();
        let lines = parse_lines(
            "{\"kind\":\"cases\",\"test\":\"no_error_answer_carries_a_planted_secret\",\"count\":1}\n\
             {\"kind\":\"total\",\"name\":\"gateways swept after their tests\",\"value\":1,\"unit\":\"gateways\"}\n\
             {\"kind\":\"total\",\"name\":\"hits in swept gateways\",\"value\":600,\"unit\":\"hits\"}\n\
             {\"kind\":\"total\",\"name\":\"gateways swept after their tests\",\"value\":1,\"unit\":\"gateways\"}\n\
             {\"kind\":\"total\",\"name\":\"hits in swept gateways\",\"value\":700,\"unit\":\"hits\"}\n",
        )
        .unwrap();
        let leaks = entries.get_mut("secret-leaks").unwrap();
        leaks.retain(|l| {
            l["name"] != "gateways swept after their tests" && l["name"] != "hits in swept gateways"
        });
        leaks.extend(lines);
        let report = render(&entries, &context()).unwrap();
        assert!(report.contains("| gateways swept after their tests | 2 gateways |"), "{report}");
        assert!(report.contains("| hits in swept gateways | 1,300 hits |"), "{report}");
        assert_eq!(report.matches("gateways swept after their tests").count(), 1, "{report}");
        let error = parse_lines("{\"kind\":\"total\",\"name\":\"x\",\"value\":1.5,\"unit\":\"\"}")
            .unwrap_err()
            .to_string();
        assert!(error.contains("line 1"), "{error}");
    }

    #[test]
    fn step_durations_are_read_back_and_garbage_is_refused() {
        let steps =
            parse_steps("612.5 cargo test --workspace --locked\n98 cargo xtask fuzz --dev\n")
                .unwrap();
        assert_eq!(
            steps[0],
            ("cargo test --workspace --locked".into(), Duration::from_millis(612_500))
        );
        assert_eq!(steps[1].0, "cargo xtask fuzz --dev");
        let error = parse_steps("soon cargo test\n").unwrap_err().to_string();
        assert!(error.contains("soon cargo test"), "{error}");
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
