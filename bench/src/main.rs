//! `cliproxy-bench`: the processes of `cargo xtask bench` (`mock`, `load`) and its runner
//! (`run`). See the crate documentation.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use cliproxy_bench::{LoadReport, MockOptions, MockStats, Mode, RunOptions, Shape, Target};

#[derive(Parser)]
#[command(
    name = "cliproxy-bench",
    about = "cliproxy benchmark harness (driven by `cargo xtask bench`)"
)]
struct Cli {
    #[command(subcommand)]
    command: Role,
}

#[derive(Subcommand)]
enum Role {
    /// The mock upstream: prints `listening ADDR`, then serves until killed.
    Mock {
        /// Address to listen on (`127.0.0.1:0`: any free port).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        /// The bearer token every request must carry.
        #[arg(long)]
        token: String,
        /// Latency of `bench-json` replies, in milliseconds.
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
        /// Answer 500 to every chat request after this many successes.
        #[arg(long)]
        fail_after: Option<u64>,
    },
    /// A bare TCP relay to `--upstream`: prints `listening ADDR`, then relays until killed.
    Relay {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        /// Where to relay to (`HOST:PORT`).
        #[arg(long)]
        upstream: std::net::SocketAddr,
    },
    /// The load generator: prints `READY` (with --ready) and `REPORT {json}`; exits 1 on any
    /// failed request.
    Load {
        /// Base URL (`http://127.0.0.1:PORT` or `https://…`).
        #[arg(long)]
        url: String,
        /// Bearer token.
        #[arg(long)]
        token: String,
        /// PEM file of the CA to trust for https.
        #[arg(long)]
        ca: Option<PathBuf>,
        /// The mode as JSON, e.g. `{"mode":"rate","rate":1000,"duration":{"secs":20,"nanos":0}}`.
        #[arg(long)]
        mode: String,
        /// Print `READY` once every stream of the first round has its first event.
        #[arg(long)]
        ready: bool,
        /// What to send: `chat` (a one-line OpenAI chat request), `chat_tools_4k` (4 KB with
        /// two tools, OpenAI chat) or `anthropic_tools_4k` (the same, Anthropic Messages).
        #[arg(long, default_value_t = Shape::Chat)]
        shape: Shape,
    },
    /// Runs the scenarios against a release `cliproxy-server`; writes report.md and report.json.
    Run {
        /// The `cliproxy-server` binary.
        #[arg(long)]
        server: PathBuf,
        /// Output directory.
        #[arg(long, default_value = "target/bench")]
        out: PathBuf,
        /// Short durations (smoke run).
        #[arg(long)]
        quick: bool,
        /// Run only this scenario (repeatable; 1..=9).
        #[arg(long = "scenario", value_name = "N")]
        scenarios: Vec<u8>,
        /// Output of `cargo bench -p cliproxy-netguard --bench limiter` (scenario 6).
        #[arg(long)]
        limiter_output: Option<PathBuf>,
        /// Do not pin processes to CPUs.
        #[arg(long)]
        no_pin: bool,
        /// The command line to print as the way to reproduce the run.
        #[arg(long, default_value = "cargo xtask bench")]
        command: String,
    },
}

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("cliproxy-bench: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<ExitCode> {
    match Cli::parse().command {
        Role::Mock { listen, token, latency_ms, fail_after } => {
            let runtime = runtime()?;
            runtime.block_on(async {
                let listener = listen_and_announce(&listen).await?;
                let options =
                    MockOptions { token, latency: Duration::from_millis(latency_ms), fail_after };
                cliproxy_bench::mock::serve(listener, options, Arc::new(MockStats::default()))
                    .await;
                Ok::<_, anyhow::Error>(())
            })?;
        }
        Role::Relay { listen, upstream } => {
            runtime()?.block_on(async {
                let listener = listen_and_announce(&listen).await?;
                cliproxy_bench::relay::serve(listener, upstream).await;
                Ok::<_, anyhow::Error>(())
            })?;
        }
        Role::Load { url, token, ca, mode, ready, shape } => {
            let mode: Mode = serde_json::from_str(&mode).context("--mode is not a valid mode")?;
            let ca_pem = match ca {
                Some(path) => Some(
                    std::fs::read(&path)
                        .with_context(|| format!("cannot read {}", path.display()))?,
                ),
                None => None,
            };
            let target = Target { base_url: url, token, ca_pem, shape };
            let ready: Option<cliproxy_bench::load::Ready> = ready.then(|| {
                Arc::new(|| {
                    let mut stdout = std::io::stdout();
                    let _ = writeln!(stdout, "READY").and_then(|()| stdout.flush());
                }) as cliproxy_bench::load::Ready
            });
            let report: LoadReport =
                runtime()?.block_on(cliproxy_bench::load::run(&target, mode, ready))?;
            let json = serde_json::to_string(&report).context("cannot serialize the report")?;
            let mut stdout = std::io::stdout();
            writeln!(stdout, "REPORT {json}").and_then(|()| stdout.flush())?;
        }
        Role::Run { server, out, quick, scenarios, limiter_output, no_pin, command } => {
            let options = RunOptions {
                server,
                out: out.clone(),
                quick,
                scenarios,
                limiter_output,
                pin: !no_pin,
                command,
            };
            let report = cliproxy_bench::run(&options)?;
            println!("{}", report.markdown());
            eprintln!(
                "cliproxy-bench: wrote {} and {} ({} budget(s) missed: reported, not a failure)",
                out.join("report.md").display(),
                out.join("report.json").display(),
                report.misses()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Binds `listen` and prints `listening ADDR`, the line the runner waits for.
async fn listen_and_announce(listen: &str) -> Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr().context("no local address")?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening {addr}").and_then(|()| stdout.flush())?;
    Ok(listener)
}

/// One thread: each role runs pinned to one CPU, where more threads would only contend.
fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")
}
